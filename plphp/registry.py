"""The pluggy registry of components, presets and model adapters.

Plugins are found through the entry-point group `plphp` (the built-ins are declared there by
plphp's own `pyproject.toml`) or registered at run time with `register_plugin`.
"""

from __future__ import annotations

import importlib
from typing import Any

import pluggy

from plphp import hookspecs
from plphp.errors import ConfigError, UnknownNameError

KINDS = ("collector", "allocator", "selector")

#: Modules that hold plphp's own plugins; used only when plphp runs from a source tree whose
#: entry points are not installed, so the built-ins are still there.
_BUILTIN_MODULES = ("plphp.policies", "plphp.backends.adapters")


class Registry:
    """Lookup of registered components, presets and adapters by name."""

    def __init__(self, load_entry_points: bool = True):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        if load_entry_points:
            self.manager.load_setuptools_entrypoints(hookspecs.PROJECT)
            for module_name in _BUILTIN_MODULES:
                module = importlib.import_module(module_name)
                if not self.manager.is_registered(module):
                    self.manager.register(module, name=module_name)

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object (a module or any object with `@hookimpl` methods)."""
        if self.manager.is_registered(plugin):
            return
        self.manager.register(plugin, name=name)
        try:
            self._check_unique()
        except ConfigError:
            self.manager.unregister(plugin)
            raise

    def unregister(self, plugin: Any) -> None:
        self.manager.unregister(plugin)

    # -- lookups ---------------------------------------------------------------------------
    def components(self, kind: str) -> dict[str, type]:
        """All registered components of one kind ("collector", "allocator", "selector")."""
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind {kind!r}: allowed are {', '.join(KINDS)}")
        hook = getattr(self.manager.hook, f"plphp_{kind}s")
        return {cls.name: cls for group in hook() for cls in group}

    def component(self, kind: str, name: str) -> type:
        table = self.components(kind)
        if name not in table:
            raise UnknownNameError(kind, name, table)
        return table[name]

    def presets(self) -> dict[str, Any]:
        return {p.name: p for group in self.manager.hook.plphp_presets() for p in group}

    def preset(self, name: str) -> Any:
        table = self.presets()
        if name not in table:
            raise UnknownNameError("preset", name, table)
        return table[name]

    def adapters(self) -> list[type]:
        return [cls for group in self.manager.hook.plphp_adapters() for cls in group]

    def _check_unique(self) -> None:
        for kind in KINDS:
            hook = getattr(self.manager.hook, f"plphp_{kind}s")
            names = [cls.name for group in hook() for cls in group]
            duplicates = {n for n in names if names.count(n) > 1}
            if duplicates:
                raise ConfigError(f"{kind} names registered twice: {sorted(duplicates)}")


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, created (and entry points loaded) on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def register_plugin(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object at run time, e.g. a module holding `@hookimpl` functions."""
    get_registry().register(plugin, name=name)


def unregister_plugin(plugin: Any) -> None:
    """Remove a plugin registered with `register_plugin`."""
    get_registry().unregister(plugin)
