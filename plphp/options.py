"""Command-line options that several plphp commands share (`plphp demo`, `plphp eval`)."""

from __future__ import annotations

from typing import Annotated

import typer

#: `--arch`: a model plphp builds or ships. The names are `plphp.models.BUILTIN_MODELS` (not listed
#: here, so that `plphp --help` does not load transformers); an unknown name is refused with them.
ArchOption = Annotated[
    str,
    typer.Option(
        help="'grid': the trained model shipped with plphp; or a tiny random-weight architecture "
        "(llava, qwen2_vl, ...: an unknown name lists them all)"
    ),
]
