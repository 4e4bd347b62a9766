"""`plphp export-tasks`: the built-in grid tasks as local files, for `plphp eval --dataset` and for
lmms-eval (`--include_path`), so that either harness runs them with no hub access.

The folder holds `test.jsonl` (rows of `plphp eval`'s JSONL format, `plphp.evaluation.dataset`),
`images/<id>-<n>.png`, and the lmms-eval task `plphp_grid` (`plphp_grid.yaml`, `utils.py`), copied
from the task folder that ships in the package (`plphp/integrations/lmms_tasks/plphp_grid`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from plphp.errors import ConfigError
from plphp.evaluation.dataset import EvalItem

#: The shipped lmms-eval task folder (package data; read as files, never imported).
TASK_DIR = Path(__file__).resolve().parents[1] / "integrations" / "lmms_tasks" / "plphp_grid"
TASK_NAME = "plphp_grid"
DATA = "test.jsonl"


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
    for item in items:
        paths = []
        for index, picture in enumerate(item.images()):
            relative = f"images/{item.id}-{index}.png"
            picture.save(out / relative)
            paths.append(relative)
        rows.append(
            {"id": item.id, "kind": item.kind, "question": item.question, "answer": item.answer, "images": paths}
        )
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for name in (f"{TASK_NAME}.yaml", "utils.py"):
        shutil.copyfile(TASK_DIR / name, out / name)
    return data
