"""`plphp export-tasks`: the built-in grid tasks as local files, for `plphp eval --dataset` and for
lmms-eval (`--include_path`), so that either harness runs them with no hub access.

The folder holds `test.jsonl` (rows of `plphp eval`'s JSONL format, `plphp.evaluation.dataset`,
plus `choices`: the answer and up to three other answers of the same kind, for multiple choice),
`images/<id>-<n>.png`, and the lmms-eval tasks `plphp_grid` (generation, scored by exact match) and
`plphp_grid_choice` (multiple choice, scored by likelihood), copied from the task folder that ships
in the package (`plphp/integrations/lmms_tasks/plphp_grid`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from plphp.errors import ConfigError
from plphp.evaluation.dataset import EvalItem

#: The shipped lmms-eval task folder (package data; read as files, never imported).
TASK_DIR = Path(__file__).resolve().parents[1] / "integrations" / "lmms_tasks" / "plphp_grid"
TASK_NAME = "plphp_grid"
TASK_FILES = ("plphp_grid.yaml", "plphp_grid_choice.yaml", "utils.py")
DATA = "test.jsonl"
#: Options of a multiple-choice row besides its answer (fewer when its kind has fewer answers).
DISTRACTORS = 3


def choices_for(items: Sequence[EvalItem], seed: int = 0) -> list[list[str]]:
    """Per item, its answer among up to `DISTRACTORS` other answers of the same kind, in a seeded order."""
    by_kind: dict[str, list[str]] = {}
    for item in items:
        answers = by_kind.setdefault(item.kind, [])
        if item.answer not in answers:
            answers.append(item.answer)
    out = []
    for index, item in enumerate(items):
        rng = random.Random(seed * 1_000_003 + index)
        others = [answer for answer in by_kind[item.kind] if answer != item.answer]
        options = [*rng.sample(others, min(DISTRACTORS, len(others))), item.answer]
        rng.shuffle(options)
        out.append(options)
    return out


def export_tasks(items: Sequence[EvalItem], out_dir: str | os.PathLike) -> Path:
    """Write `items` (and the lmms-eval task files) into `out_dir`; return the JSONL file.

    A folder written before is written over.

    Raises:
        ConfigError: when `out_dir` is a file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {str(out)!r} is a file; give a folder")
    data = out / DATA
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for item, choices in zip(items, choices_for(items)):
        paths = []
        for index, picture in enumerate(item.images()):
            relative = f"images/{item.id}-{index}.png"
            picture.save(out / relative)
            paths.append(relative)
        rows.append(
            {
                "id": item.id,
                "kind": item.kind,
                "question": item.question,
                "answer": item.answer,
                "images": paths,
                "choices": choices,
            }
        )
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for name in TASK_FILES:
        shutil.copyfile(TASK_DIR / name, out / name)
    return data
