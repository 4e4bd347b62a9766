"""Adapters of the architectures beyond the first five (`plphp.backends.adapters`), one module per
family. Each module defines `ADAPTERS`, a list of `ModelAdapter` subclasses; this package registers
them through the `plphp_adapters` hook like any plugin (docs/architecture.md, "Extension points")."""

from __future__ import annotations

import importlib

from plphp.hookspecs import hookimpl

#: Modules of this package that hold adapters, each with an `ADAPTERS` list.
FAMILY_MODULES: tuple[str, ...] = (
    "llava",
    "qwen2_vl",
    "qwen3_vl",
    "gemma3",
    "mistral3",
    "internvl",
    "idefics3",
    "llava_next_video",
)


@hookimpl
def plphp_adapters():
    return [adapter for name in FAMILY_MODULES for adapter in importlib.import_module(f"{__name__}.{name}").ADAPTERS]
