"""The pluggy registry of components, presets and model adapters.

Plugins are found through the entry-point group `plphp` (the built-ins are declared there by
plphp's own `pyproject.toml`), named as modules in the `PLPHP_PLUGINS` environment variable or the
command line's `--plugin`, or registered at run time with `register_plugin`.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable
from typing import Any

import pluggy

from plphp import hookspecs
from plphp.errors import ConfigError, UnknownNameError, UnsupportedModelError

KINDS = ("collector", "allocator", "selector", "merger")

#: Environment variable naming plugin modules to load into every registry (comma-separated).
PLUGINS_VARIABLE = "PLPHP_PLUGINS"

#: Modules that hold plphp's own plugins; used only when plphp runs from a source tree whose
#: entry points are not installed, so the built-ins are still there.
_BUILTIN_MODULES = ("plphp.policies", "plphp.backends.architectures")


class Registry:
    """Lookup of registered components, presets and adapters by name.

    Every plugin is checked when it is registered: a hook name that plphp does not declare (a
    misspelt `plphp_selector`) and a name that another plugin already registered (a component, a
    preset or an adapter) are errors naming the plugin.
    """

    def __init__(self, load_entry_points: bool = True):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        if load_entry_points:
            self.manager.load_setuptools_entrypoints(hookspecs.PROJECT)
            for module_name in _BUILTIN_MODULES:
                module = importlib.import_module(module_name)
                if not self.manager.is_registered(module):
                    self.manager.register(module, name=module_name)
            self._check_pending()
            self._check_unique()
            self.load_modules(plugin_modules(os.environ.get(PLUGINS_VARIABLE, "")), source=PLUGINS_VARIABLE)

    def load_modules(self, names: Iterable[str], source: str = "--plugin") -> list[Any]:
        """Import plugin modules by dotted name and register each (already registered ones are kept).

        Raises:
            ConfigError: one line naming the module and `source` when it cannot be imported or is refused.
        """
        modules = []
        for name in names:
            try:
                module = importlib.import_module(name)
            except Exception as exc:  # ImportError, or any error raised while the module runs
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ConfigError(f"{source}: plugin module {name!r} could not be imported: {first}") from None
            self.register(module, name=name)
            modules.append(module)
        return modules

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object (a module or any object with `@hookimpl` methods)."""
        if self.manager.is_registered(plugin):
            return
        self.manager.register(plugin, name=name)
        try:
            self._check_pending()
            self._check_unique()
        except ConfigError:
            self.manager.unregister(plugin)
            raise

    def unregister(self, plugin: Any) -> None:
        self.manager.unregister(plugin)

    # -- lookups ---------------------------------------------------------------------------
    def components(self, kind: str) -> dict[str, type]:
        """All registered components of one kind ("collector", "allocator", "selector", "merger")."""
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
        """Adapter classes, in the order they are tried (most specific first within a plugin)."""
        return [cls for group in self.manager.hook.plphp_adapters() for cls in group]

    def architectures(self) -> list[str]:
        """The model classes the registered adapters handle: the one list of supported architectures."""
        names = {name for adapter in self.adapters() for name in adapter.architectures}
        return sorted(name for name in names if name.endswith("Generation"))

    def adapter_for(self, model: Any) -> Any:
        """The first registered adapter that handles `model`, built on it.

        Raises:
            UnsupportedModelError: naming the model's class and the supported architectures.
        """
        for adapter in self.adapters():
            if adapter.handles(model):
                return adapter(model)
        raise UnsupportedModelError(
            f"plphp has no adapter for {type(model).__name__}; supported architectures are "
            f"{', '.join(self.architectures())} (a plugin can add one through the plphp_adapters hook)"
        )

    # -- checks ------------------------------------------------------------------------------------
    def _check_pending(self) -> None:
        """Refuse hook implementations whose name plphp does not declare (a misspelt hook)."""
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            declared = sorted(name for name in dir(hookspecs) if name.startswith(f"{hookspecs.PROJECT}_"))
            hook = next((name for name in _hook_names(exc.plugin) if name not in declared), "?")
            close = difflib.get_close_matches(hook, declared, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            plugin = self.manager.get_name(exc.plugin) or repr(exc.plugin)
            raise ConfigError(
                f"plugin {plugin!r} implements unknown hook {hook!r}: plphp's hooks are {', '.join(declared)}{hint}"
            ) from None

    def _check_unique(self) -> None:
        """Refuse a name that two plugins register, for every kind (components, presets, adapters)."""
        groups = {kind: getattr(self.manager.hook, f"plphp_{kind}s")() for kind in KINDS}
        groups["preset"] = self.manager.hook.plphp_presets()
        groups["adapter"] = self.manager.hook.plphp_adapters()
        for kind, contributed in groups.items():
            names = [entry.name for group in contributed for entry in group]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ConfigError(
                    f"{kind} {', '.join(repr(n) for n in duplicates)} registered twice; "
                    f"each {kind} name must be unique across plugins"
                )


def _hook_names(plugin: Any) -> list[str]:
    """The names of the `@hookimpl` functions of a plugin object."""
    marker = f"{hookspecs.PROJECT}_impl"
    return [name for name in dir(plugin) if hasattr(getattr(plugin, name, None), marker)]


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, created (and entry points loaded) on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def plugin_modules(text: str) -> list[str]:
    """The module names of a `PLPHP_PLUGINS`-style list: comma-separated, blanks ignored."""
    return [name.strip() for name in text.split(",") if name.strip()]


def load_plugins(names: Iterable[str], source: str = "--plugin") -> list[Any]:
    """Import plugin modules by name and register them in the process-wide registry (`--plugin`)."""
    return get_registry().load_modules(names, source=source)


def register_plugin(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object at run time, e.g. a module holding `@hookimpl` functions."""
    get_registry().register(plugin, name=name)


def unregister_plugin(plugin: Any) -> None:
    """Remove a plugin registered with `register_plugin`."""
    get_registry().unregister(plugin)
