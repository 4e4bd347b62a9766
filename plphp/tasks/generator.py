"""Seeded grounded questions about grid scenes, with answers computed from the scenes' metadata.

Five kinds of question, each needing a different amount of the picture:

| kind | images | question | answer |
| --- | --- | --- | --- |
| `locate` | 1 | where is the red circle? | row 2 column 3 |
| `identify` | 1 | what is in row 2 column 3? | red circle (or: empty) |
| `count` | 1 | how many circles are there? | 2 circles |
| `list_row` | 1 | what is in row 2? | red circle, empty, blue square |
| `compare` | 2-4 | which images show a red circle? | first third (or: none) |

Answers run over several tokens and the informative ones come after the first (`row 2 column 3`
starts with a fixed word), because the first answer token comes from prefill, which a decode-stage
policy leaves exact: only the later tokens can tell such policies apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from plphp.tasks.scenes import COLORS, LAYOUTS, SHAPES, Scene, Shape, random_scene, with_layout

KINDS: tuple[str, ...] = ("locate", "identify", "count", "list_row", "compare")
SINGLE_IMAGE_KINDS: tuple[str, ...] = ("locate", "identify", "count", "list_row")
MULTI_IMAGE_KINDS: tuple[str, ...] = ("compare",)
SPLITS: tuple[str, ...] = ("train", "test")
ORDINALS: tuple[str, ...] = ("first", "second", "third", "fourth")
EMPTY = "empty"
NONE = "none"


@dataclass(frozen=True)
class TaskItem:
    """One question about one or more scenes.

    Attributes:
        id: stable identifier (split, seed and index).
        kind: one of `KINDS`.
        question: the question text (no image placeholders; images go before it).
        answer: the reference answer.
        scenes: the scenes, one per image, in order.
        params: what the question asks about (target shape, cell or row), enough to recompute the answer.
    """

    id: str
    kind: str
    question: str
    answer: str
    scenes: tuple[Scene, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def images(self) -> list[Image.Image]:
        """The rendered pictures, one per scene."""
        return [scene.render() for scene in self.scenes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "question": self.question,
            "answer": self.answer,
            "scenes": [scene.to_dict() for scene in self.scenes],
            "params": self.params,
        }


def words(text: str) -> list[str]:
    """Split into lowercase words and punctuation marks: the task's own tokens."""
    return re.findall(r"[a-z0-9]+|[^a-z0-9\s]", text.lower())


def answer_for(kind: str, scenes: Sequence[Scene], params: dict[str, Any]) -> str:
    """The answer to a question of `kind` with `params`, computed from the scenes' metadata."""
    if kind == "locate":
        (row, col), *_ = scenes[0].find(Shape(params["color"], params["shape"]))
        return f"row {row} column {col}"
    if kind == "identify":
        shape = scenes[0].cells.get((params["row"], params["column"]))
        return shape.describe() if shape else EMPTY
    if kind == "count":
        count = sum(shape.kind == params["shape"] for shape in scenes[0].cells.values())
        return f"{count} {params['shape']}" + ("" if count == 1 else "s")
    if kind == "list_row":
        return ", ".join(shape.describe() if shape else EMPTY for shape in scenes[0].row(params["row"]))
    if kind == "compare":
        target = Shape(params["color"], params["shape"])
        hits = [ORDINALS[i] for i, scene in enumerate(scenes) if scene.find(target)]
        return " ".join(hits) if hits else NONE
    raise ValueError(f"unknown task kind {kind!r}; expected one of {KINDS}")


def question_for(kind: str, params: dict[str, Any]) -> str:
    """The question text of a task of `kind` with `params`."""
    if kind == "locate":
        return f"where is the {params['color']} {params['shape']}?"
    if kind == "identify":
        return f"what is in row {params['row']} column {params['column']}?"
    if kind == "count":
        return f"how many {params['shape']}s are there?"
    if kind == "list_row":
        return f"what is in row {params['row']}?"
    if kind == "compare":
        return f"which images show a {params['color']} {params['shape']}?"
    raise ValueError(f"unknown task kind {kind!r}; expected one of {KINDS}")


def make_task(
    kind: str,
    rng: np.random.Generator,
    *,
    item_id: str = "",
    rows: int = 3,
    cols: int = 3,
    size: int = 96,
    max_images: int = 4,
    layout: str = "cell",
) -> TaskItem:
    """One task of `kind`, drawn from `rng`.

    A `quadrant` layout draws the shapes' quadrants last, so the question, the answer and the
    cells are those of the `cell` task drawn from the same `rng`; only the pictures differ.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} is not allowed; use one of {LAYOUTS}")
    if kind == "compare":
        count = int(rng.integers(2, max(2, min(max_images, len(ORDINALS))) + 1))
        scenes = tuple(random_scene(rng, rows, cols, size, min_shapes=1) for _ in range(count))
        present = sorted({shape for scene in scenes for shape in scene.cells.values()}, key=Shape.describe)
        absent = [Shape(c, s) for c in COLORS for s in SHAPES if Shape(c, s) not in present]
        pool = absent if absent and rng.random() < 0.2 else present
        target = pool[int(rng.integers(len(pool)))]
        params: dict[str, Any] = {"color": target.color, "shape": target.kind}
    else:
        scene = random_scene(rng, rows, cols, size)
        scenes = (scene,)
        if kind == "locate":
            cell = sorted(scene.cells)[int(rng.integers(len(scene.cells)))]
            params = {"color": scene.cells[cell].color, "shape": scene.cells[cell].kind}
        elif kind == "identify":
            params = {"row": int(rng.integers(1, rows + 1)), "column": int(rng.integers(1, cols + 1))}
        elif kind == "count":
            params = {"shape": SHAPES[int(rng.integers(len(SHAPES)))]}
        elif kind == "list_row":
            params = {"row": int(rng.integers(1, rows + 1))}
        else:
            raise ValueError(f"unknown task kind {kind!r}; expected one of {KINDS}")
    if layout != "cell":  # the answers read the cells, which the layout leaves as they are
        scenes = tuple(with_layout(scene, layout, rng) for scene in scenes)
    return TaskItem(
        id=item_id,
        kind=kind,
        question=question_for(kind, params),
        answer=answer_for(kind, scenes, params),
        scenes=scenes,
        params=params,
    )


def make_tasks(
    num_items: int,
    *,
    seed: int = 0,
    split: str = "test",
    kinds: Sequence[str] = KINDS,
    rows: int = 3,
    cols: int = 3,
    size: int = 96,
    max_images: int = 4,
    layout: str = "cell",
) -> list[TaskItem]:
    """A deterministic list of tasks; the kinds take turns.

    Item `i` depends only on `(seed, split, i)` and the grid settings, so a longer list starts with
    the shorter one, and the `train` and `test` splits never share a draw.

    Args:
        num_items: how many tasks.
        seed: the seed.
        split: "train" or "test".
        kinds: which kinds, in turn (see `KINDS`).
        rows: grid rows per picture.
        cols: grid columns per picture.
        size: picture width and height in pixels.
        max_images: most pictures in a `compare` task (2 to 4).
        layout: `cell` (shapes fill their cells) or `quadrant` (each drawn small in one quadrant of
            its cell; the same questions and answers): see `plphp.tasks.scenes`.
    """
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not allowed; use one of {SPLITS}")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds: {unknown or list(kinds)!r} not allowed; choose from {KINDS}")
    items = []
    for index in range(num_items):
        rng = np.random.default_rng([seed, SPLITS.index(split), index])
        kind = kinds[index % len(kinds)]
        item_id = f"{split}-{seed}-{index}"
        items.append(
            make_task(kind, rng, item_id=item_id, rows=rows, cols=cols, size=size, max_images=max_images, layout=layout)
        )
    return items


def vocabulary(rows: int = 3, cols: int = 3) -> list[str]:
    """Every word and punctuation mark that questions and answers of these grids can use, sorted."""
    fixed = {"where", "is", "the", "what", "in", "row", "column", "how", "many", "are", "there", "which", "images"}
    fixed |= {"show", "a", "?", ","}
    numbers = [str(n) for n in range(0, max(rows, cols, rows * cols) + 1)]
    shapes = [*SHAPES, *(f"{shape}s" for shape in SHAPES)]
    return sorted({*fixed, *numbers, *COLORS, *shapes, *ORDINALS, EMPTY, NONE})
