"""`plphp calibrate`: fit PLPHP's tiered allocator (`vision_tiers`: α, β, r, Δr) to a model from a small
calibration set, at a retention target, optionally maximizing attention recall (no labels needed).

A face: it may import the backends, models and evaluation; nothing below it imports it. See
docs/policies/plphp.md, "Calibrating the tiers", and `plphp calibrate --help`.
"""

from __future__ import annotations

from plphp.lazy import lazy_exports

_EXPORTS = {
    "Calibration": "core",
    "calibrate": "core",
    "CalibrationError": "solve",
    "write_calibration": "output",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
