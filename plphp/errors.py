"""Errors raised by plphp.

Every error that a user can cause (a config, a name, an input) is a `PlphpError` whose message is a
single line naming the field, the value and what is allowed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PlphpError(Exception):
    """Base class of the errors plphp raises on bad input."""


class ConfigError(PlphpError, ValueError):
    """A policy or run config is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A component, preset or adapter name is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(repr(k) for k in known) or "none"
        super().__init__(f"unknown {kind} {name!r}: registered {kind}s are {listing}{hint}")
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class UnsupportedModelError(PlphpError, TypeError):
    """No registered adapter handles the model."""


class PolicyContractError(PlphpError, RuntimeError):
    """A component returned something that breaks the contract of its kind (a bug in the policy)."""
