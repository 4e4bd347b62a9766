"""Evaluation items: the built-in synthetic tasks, or a local JSONL file of questions about image files.

A JSONL dataset has one JSON object per line::

    {"id": "q1", "images": ["pics/a.png", "pics/b.png"], "question": "which image shows a cat?", "answer": "second"}

`images` are paths relative to the JSONL file (or absolute); `id` is optional (the line number is
used). The question may hold one `<image>` marker per image to place the pictures inside the text;
without markers the pictures come first. Every row is checked before anything runs, and an error
names the file, the line and the id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from plphp.errors import PlphpError
from plphp.runconfig import image_file_problem
from plphp.validation import shown

IMAGE_MARKER = "<image>"


class DatasetError(PlphpError, ValueError):
    """A dataset row is unusable (the message names the row)."""


@dataclass
class EvalItem:
    """One question to evaluate.

    Attributes:
        id: unique within the dataset; results are keyed by it.
        question: the text, with optional `<image>` markers.
        answer: the reference answer.
        kind: a task kind for per-kind figures ("" for JSONL rows without one).
        where: where the item comes from, for error messages ("data.jsonl line 4").
        load_images: returns the pictures (called when the item's batch runs).
    """

    id: str
    question: str
    answer: str
    kind: str = ""
    where: str = ""
    load_images: Callable[[], list[Image.Image]] = field(default=list, repr=False)
    num_images: int = 0

    def images(self) -> list[Image.Image]:
        """The pictures, decoded; a file that cannot be read raises `DatasetError` naming the row."""
        try:
            return self.load_images()
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{self.where} (id {self.id!r}): cannot read an image: {exc}") from None


def builtin_items(
    num_items: int = 20, *, seed: int = 0, kinds: Sequence[str] | None = None, **grid: Any
) -> list[EvalItem]:
    """The synthetic tasks of `plphp.tasks` (test split) as evaluation items.

    Args:
        num_items: how many.
        seed: the tasks' seed.
        kinds: task kinds (all by default).
        **grid: `rows`, `cols`, `size`, `max_images`, `layout`, passed to `plphp.tasks.make_tasks`.
    """
    from plphp.tasks import KINDS, make_tasks

    tasks = make_tasks(num_items, seed=seed, split="test", kinds=tuple(kinds or KINDS), **grid)
    return [
        EvalItem(
            id=task.id,
            question=task.question,
            answer=task.answer,
            kind=task.kind,
            where=f"built-in task {task.id}",
            load_images=task.images,
            num_images=len(task.scenes),
        )
        for task in tasks
    ]


def resolve_layout(layout: str, model: str | os.PathLike) -> str:
    """`--layout`: `cell` or `quadrant` as given, or for `auto` the layout `model` was trained on.

    Raises:
        DatasetError: for any other value.
    """
    from plphp.tasks import LAYOUTS

    if layout == "auto":
        from plphp.models.builtin import task_layout

        return task_layout(model)
    if layout not in LAYOUTS:
        raise DatasetError(f"layout: {layout!r} is not allowed; use auto, {', '.join(LAYOUTS)}")
    return layout


def _open_images(paths: Sequence[Path]) -> Callable[[], list[Image.Image]]:
    def load() -> list[Image.Image]:
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return images

    return load


def load_jsonl(path: str | os.PathLike) -> list[EvalItem]:
    """Read and check a JSONL dataset; image paths are resolved against the file's folder.

    Raises:
        DatasetError: naming the line of the first bad row (bad JSON, no question, no answer,
            images not a list of paths, a missing or unreadable image file, `<image>` markers not
            matching the number of images, an id or kind of the wrong type, a repeated id).
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"dataset: {str(path)!r} is a directory; give a .jsonl file")
    if not path.is_file():
        raise DatasetError(f"dataset: file {str(path)!r} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"dataset: {path.name} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    base = path.resolve().parent
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected a JSON object with images, question and answer")
        raw_id = row.get("id", f"line-{number}")
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            raise DatasetError(f"{where}: id must be a string or an integer, got {shown(raw_id)}")
        item_id = str(raw_id)
        where_id = f"{where} (id {item_id!r})"
        if not isinstance(row.get("kind", ""), str):
            raise DatasetError(f"{where_id}: kind must be a string, got {shown(row['kind'])}")
        question, answer, images = row.get("question"), row.get("answer"), row.get("images", [])
        if not isinstance(question, str) or not question.replace(IMAGE_MARKER, "").strip():
            raise DatasetError(f"{where_id}: no question (a non-empty string is required)")
        if not isinstance(answer, str) or not answer.strip():
            raise DatasetError(f"{where_id}: no answer (a non-empty string is required)")
        if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
            raise DatasetError(f"{where_id}: images must be a list of file paths")
        files = []
        for image in images:
            resolved, problem = image_file_problem(image, base)
            if problem == "the path is empty":
                raise DatasetError(f"{where_id}: an image path is empty; images must be a list of file paths")
            if problem:
                raise DatasetError(f"{where_id}: image {problem}")
            files.append(resolved)
        markers = question.count(IMAGE_MARKER)
        if markers and markers != len(images):
            raise DatasetError(
                f"{where_id}: the question has {markers} {IMAGE_MARKER} placeholder(s) but the row lists "
                f"{len(images)} image(s); give one placeholder per image, or none to put the images first"
            )
        if item_id in seen:
            raise DatasetError(f"{where_id}: id repeated (first on line {seen[item_id]}); ids must be unique")
        seen[item_id] = number
        items.append(
            EvalItem(
                id=item_id,
                question=question,
                answer=answer,
                kind=row.get("kind", ""),
                where=where,
                load_images=_open_images(files),
                num_images=len(files),
            )
        )
    if not items:
        raise DatasetError(f"dataset: {path.name} holds no rows")
    return items
