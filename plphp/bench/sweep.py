"""`--sweep FIELD=START:STOP:STEP` (or `FIELD=V1,V2,...`): one policy variant per value.

`FIELD` is a dotted path into the policy config (`allocator.retention`, `start_layer`,
`collector.window`). `retention` is short for a uniform allocator at that rate, so that the
curve's x axis is the retention actually applied; the policy's collector, selector and start layer
stay. Values are validated by the policy itself, whose errors name the field, value and range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from plphp.errors import ConfigError

_FORM = "expected FIELD=START:STOP:STEP or FIELD=V1,V2,... (e.g. retention=0.1:1.0:0.1)"


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep: the field and its values, in order."""

    field: str
    values: tuple[float, ...]

    def overrides(self, value: float) -> dict[str, Any]:
        """The policy-config overrides of one point."""
        if self.field == "retention":
            return {"allocator": {"name": "uniform", "retention": value}}
        out: dict[str, Any] = {}
        node = out
        *parents, leaf = self.field.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = int(value) if float(value).is_integer() and leaf in _INTEGER_FIELDS else value
        return out


_INTEGER_FIELDS = {"start_layer", "window", "seed"}


def _number(text: str, spec: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--sweep {spec!r}: {what} {text!r} is not a number; {_FORM}") from None
    if not math.isfinite(value):
        raise ConfigError(f"--sweep {spec!r}: {what} {text!r} is not finite; {_FORM}")
    return value


def parse_sweep(spec: str) -> Sweep:
    """Parse one `--sweep` argument.

    `START:STOP:STEP` includes STOP when it is reached within float rounding
    (`0.1:1.0:0.1` gives ten values, 0.1 … 1.0); values are rounded to 10 decimals.

    Raises:
        ConfigError: naming the argument, the bad part and the accepted forms.
    """
    field, sep, values = spec.partition("=")
    field = field.strip()
    if not sep or not field or not values.strip():
        raise ConfigError(f"--sweep {spec!r}: {_FORM}")
    if not all(part.isidentifier() for part in field.split(".")):
        raise ConfigError(f"--sweep {spec!r}: field {field!r} is not a dotted name; {_FORM}")
    if ":" in values:
        parts = values.split(":")
        if len(parts) != 3:
            raise ConfigError(f"--sweep {spec!r}: range {values!r} needs three parts START:STOP:STEP")
        start, stop, step = (_number(p, spec, name) for p, name in zip(parts, ("START", "STOP", "STEP")))
        if step <= 0:
            raise ConfigError(f"--sweep {spec!r}: STEP {parts[2]!r} must be positive")
        if stop < start:
            raise ConfigError(f"--sweep {spec!r}: STOP {parts[1]!r} is below START {parts[0]!r}")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        points = tuple(round(start + i * step, 10) for i in range(count))
    else:
        points = tuple(_number(p.strip(), spec, "value") for p in values.split(","))
    if field == "retention":
        bad = [v for v in points if not 0.0 <= v <= 1.0]
        if bad:
            raise ConfigError(f"--sweep {spec!r}: retention {bad[0]!r} is outside the allowed range 0 ≤ retention ≤ 1")
    return Sweep(field=field, values=points)
