"""plphp: per-layer per-head vision-token pruning for vision-language models, and a registry of policies.

import plphp
policy = plphp.load_policy("plphp")
with plphp.apply(model, policy) as session:
    out = model.generate(**inputs, max_new_tokens=64)
print(session.report.summary())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plphp.components import Allocator, Collector, Params, Selector
from plphp.errors import ConfigError, PlphpError, PolicyContractError, UnknownNameError, UnsupportedModelError
from plphp.hookspecs import hookimpl
from plphp.policy import Policy, Preset, load_policy
from plphp.registry import get_registry, register_plugin, unregister_plugin
from plphp.report import LayerReport, PruningReport
from plphp.stats import LayerStats, PromptInfo

if TYPE_CHECKING:
    from plphp.backends.events import SessionObserver
    from plphp.backends.session import Session, apply

__version__ = "0.1.0"

__all__ = [
    "Allocator",
    "Collector",
    "ConfigError",
    "LayerReport",
    "LayerStats",
    "Params",
    "PlphpError",
    "Policy",
    "PolicyContractError",
    "Preset",
    "PromptInfo",
    "PruningReport",
    "Selector",
    "Session",
    "SessionObserver",
    "UnknownNameError",
    "UnsupportedModelError",
    "apply",
    "get_registry",
    "hookimpl",
    "load_policy",
    "register_plugin",
    "unregister_plugin",
]


def __getattr__(name: str) -> Any:
    # The backend imports transformers; load it only when it is asked for.
    if name in ("apply", "Session"):
        from plphp.backends import session

        return getattr(session, name)
    if name == "SessionObserver":
        from plphp.backends.events import SessionObserver

        return SessionObserver
    raise AttributeError(f"module 'plphp' has no attribute {name!r}")
