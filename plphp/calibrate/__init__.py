"""`plphp calibrate`: fit PLPHP's tiered allocator (`vision_tiers`: α, β, r, Δr) to a model from a small
calibration set, at a retention target, optionally maximizing attention recall (no labels needed).

A face: it may import the backends, models and evaluation; nothing below it imports it. See
docs/policies/plphp.md, "Calibrating the tiers", and `plphp calibrate --help`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Calibration": "core",
    "calibrate": "core",
    "CalibrationError": "solve",
    "write_calibration": "output",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"plphp.calibrate.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'plphp.calibrate' has no attribute {name!r}")
