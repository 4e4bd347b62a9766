"""The hooks through which plugins contribute to plphp.

Built-in components register through these same hooks (see `plphp.policies` and
`plphp.backends.adapters`); a third-party package does the same from a module named in the
entry-point group `plphp`, or a script calls `plphp.register_plugin(obj)`.

Each hook returns a list; pluggy concatenates the lists of all plugins.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "plphp"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def plphp_collectors() -> list[type]:
    """Return `Collector` subclasses to register under their `name`."""


@hookspec
def plphp_allocators() -> list[type]:
    """Return `Allocator` subclasses to register under their `name`."""


@hookspec
def plphp_selectors() -> list[type]:
    """Return `Selector` subclasses to register under their `name`."""


@hookspec
def plphp_mergers() -> list[type]:
    """Return `Merger` subclasses (input stage: fold dropped tokens into kept or new ones)."""


@hookspec
def plphp_presets() -> list[Any]:
    """Return `Preset` objects: named policy configs (see `plphp.policy.Preset`)."""


@hookspec
def plphp_adapters() -> list[type]:
    """Return `ModelAdapter` subclasses (see `plphp.backends.adapters`), most specific first."""
