"""Command-line options that several plphp commands share (`demo`, `eval`, `inspect`, `calibrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: `--arch`: a model plphp builds or ships. The names are `plphp.models.BUILTIN_MODELS` (not listed
#: here, so that `plphp --help` does not load transformers); an unknown name is refused with them.
ArchOption = Annotated[
    str,
    typer.Option(
        help="'grid' or 'grid-v2': the trained models shipped with plphp; or a tiny random-weight architecture "
        "(llava, qwen2_vl, ...: an unknown name lists them all)"
    ),
]

#: `--model`: a hub id or a local directory; without it, `--arch` picks a built-in model.
ModelOption = Annotated[
    str | None, typer.Option(help="hub id or local directory written by save_pretrained; default: --arch")
]

#: `--dataset`: a JSONL dataset (`plphp.evaluation.dataset.load_jsonl`); without it, the built-in tasks.
DatasetOption = Annotated[
    Path | None,
    typer.Option(help="JSONL of {images, question, answer}, images relative to it; default: built-in tasks"),
]

#: `--seed`: the seed of the built-in tasks.
SeedOption = Annotated[int, typer.Option(min=0, help="built-in tasks: seed")]

#: `--task`: which kinds of built-in task (repeatable).
TaskOption = Annotated[
    list[str] | None,
    typer.Option("--task", help="built-in tasks: kind, repeatable (locate, identify, count, list_row, compare)"),
]

#: `--layout`: how the built-in tasks draw their pictures (`plphp.tasks.LAYOUTS`, or `auto`).
LayoutOption = Annotated[
    str,
    typer.Option(
        help="built-in tasks: 'cell' (shapes fill their cells), 'quadrant' (small, in one quadrant) or 'auto' "
        "(the layout the model was trained on, from its training.json; else cell)"
    ),
]

#: `--device` and `--dtype` of a loaded model.
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")]
DtypeOption = Annotated[str, typer.Option(help="float32, float16, bfloat16, auto")]
