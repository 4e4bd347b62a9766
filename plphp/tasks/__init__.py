"""Synthetic grounded tasks: questions about coloured shapes on a grid, answers from the metadata.

Deterministic by seed, with a small vocabulary (`vocabulary()`) and multi-token answers, so that a
tiny model can be trained on them and a pruning policy's effect on decoding can be scored.

Examples:
    >>> from plphp.tasks import make_tasks, exact_match
    >>> items = make_tasks(8, seed=0)
    >>> items[0].question, items[0].answer
    ('where is the red circle?', 'row 1 column 3')
    >>> images = items[0].images()
"""

from __future__ import annotations

from plphp.tasks.generator import (
    KINDS,
    MULTI_IMAGE_KINDS,
    ORDINALS,
    SINGLE_IMAGE_KINDS,
    SPLITS,
    TaskItem,
    answer_for,
    make_task,
    make_tasks,
    question_for,
    vocabulary,
    words,
)
from plphp.tasks.scenes import COLORS, LAYOUTS, SHAPES, Scene, Shape, random_scene, with_layout
from plphp.tasks.scoring import exact_match, normalize, token_accuracy

__all__ = [
    "COLORS",
    "KINDS",
    "LAYOUTS",
    "MULTI_IMAGE_KINDS",
    "ORDINALS",
    "SHAPES",
    "SINGLE_IMAGE_KINDS",
    "SPLITS",
    "Scene",
    "Shape",
    "TaskItem",
    "answer_for",
    "exact_match",
    "make_task",
    "make_tasks",
    "normalize",
    "question_for",
    "random_scene",
    "token_accuracy",
    "vocabulary",
    "with_layout",
    "words",
]
