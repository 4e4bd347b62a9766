"""The rules of calibration: candidate policies, where α and β go, and solving r for a retention target.

**α and β.** From a prefill under the candidate's collector, each layer's mean `γ` over the
calibration items; over the pruned layers, `β` is the lower quantile (default the lower tertile,
1/3) and `α` the upper one (default the upper tertile, 2/3) of those per-layer means, rounded to
3 decimals. The three tiers then split the pruned layers (by their mean `γ`) into thirds.

**r.** The target is the mean over items of each item's vision-KV kept share (the report's
`vision_kept_fraction` of the item alone: every layer counts, unpruned ones at 1.0). The kept share
rises with `r`, in steps (⌈r·N⌉ per image, tiers per sample), so `r` is found by bisection on
`predict_kept` (the policy's own allocator and rounding replayed on the recorded `γ`), taking the
step whose share is nearest the target, on a grid of 4 decimals, and within the step the shortest
decimal. `Δr` follows `r`:
`proportional` keeps `Δr / r` of the base policy (capped so that `r + Δr ≤ 1`), `fixed` keeps the
base's `Δr` (then `Δr ≤ r ≤ 1 − Δr`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from plphp.calibrate.measure import Probe, predict_kept
from plphp.errors import PlphpError
from plphp.policy import Policy, load_policy

#: The default quantiles of the per-layer mean γ at which β and α are placed: the tertiles.
TERTILES = (1 / 3, 2 / 3)
DELTA_RULES = ("proportional", "fixed")
#: r is solved on a grid of 4 decimals (steps of 1e-4), so that float noise never picks it.
DIGITS = 4
GRID = 10**DIGITS


class CalibrationError(PlphpError, ValueError):
    """Calibration cannot run as asked (a target out of reach, a base policy without tiers, ...)."""


def check_base(policy: Policy) -> None:
    """Refuse a base policy whose allocator is not `vision_tiers`."""
    if policy.allocator.name != "vision_tiers":
        raise CalibrationError(
            f"policy {policy.name!r}: calibration fits the tiers of allocator 'vision_tiers', but its allocator is "
            f"{policy.allocator.name!r}; start from a tiered policy such as 'plphp' or 'plphp-question'"
        )


def window_of(policy: Policy) -> int | str | None:
    """The observation window of the policy's collector (`last_token.window`), None if it has none."""
    return getattr(policy.collector.params, "window", None)


def delta_ratio(policy: Policy) -> float:
    """`Δr / r` of a tiered policy (0 when r is 0)."""
    p = policy.allocator.params
    return p.delta / p.retention if p.retention > 0 else 0.0


@dataclass(frozen=True)
class Candidate:
    """A family of tiered policies, one per `r`: observation window, where α and β sit, how Δr follows r.

    Attributes:
        label: a short name for tables ("w=1 q=1/3,2/3 Δr/r=0.33").
        window: `last_token.window` (None: the base policy's collector as it is).
        quantiles: `(β's, α's)` quantile of the per-layer mean γ; None: the base policy's α and β.
        rule: "proportional" (Δr = ratio · r) or "fixed" (Δr = delta).
        ratio: Δr / r for the proportional rule.
        delta: Δr for the fixed rule.
    """

    label: str
    window: int | str | None
    quantiles: tuple[float, float] | None
    rule: str = "proportional"
    ratio: float = 0.0
    delta: float = 0.0


def delta_for(candidate: Candidate, r: float) -> float:
    """Δr for retention `r` under the candidate's rule (proportional: capped so that r + Δr ≤ 1)."""
    if candidate.rule == "fixed":
        return candidate.delta
    delta = min(round(candidate.ratio * r, 6), r, 1.0 - r)
    while r + delta > 1.0 or r - delta < 0.0:  # float noise at the caps
        delta = math.nextafter(delta, 0.0)
    return max(delta, 0.0)


def r_range(candidate: Candidate) -> tuple[float, float]:
    """The retentions `r` the candidate's rule allows."""
    if candidate.rule == "fixed":
        return candidate.delta, 1.0 - candidate.delta
    return 0.0, 1.0


def thresholds(measured: Probe, quantiles: tuple[float, float]) -> tuple[float, float]:
    """`(α, β)`: the quantiles of the per-layer mean γ over the pruned layers, rounded to 3 decimals."""
    means = layer_means(measured)
    values = means[torch.tensor(measured.pruned, dtype=torch.bool)] if measured.pruned else means
    values = values[~values.isnan()]
    if values.numel() == 0:
        raise CalibrationError("calibration: no pruned layer measured a vision attention γ on these items")
    low, high = (float(torch.quantile(values.double(), q)) for q in quantiles)
    beta, alpha = round(low, 3), round(high, 3)
    return max(alpha, beta), beta


def layer_means(measured: Probe) -> torch.Tensor:
    """`[num_layers]` mean γ over the items (NaN where not measured)."""
    return measured.per_item.nanmean(0)


def build(base: Policy, candidate: Candidate, alpha: float, beta: float, r: float, name: str) -> Policy:
    """The base policy with the candidate's window and the given tiers."""
    overrides: dict = {
        "name": name,
        "allocator": {"alpha": alpha, "beta": beta, "retention": r, "delta": delta_for(candidate, r)},
    }
    if candidate.window is not None:
        overrides["collector"] = {"window": candidate.window}
    return load_policy(base, **overrides)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 1.0


@dataclass
class Solved:
    """A candidate with its r solved: the policy and the kept share it is predicted to reach."""

    candidate: Candidate
    policy: Policy
    alpha: float
    beta: float
    predicted: float


def reachable(base: Policy, candidate: Candidate, measured: Probe, alpha: float, beta: float) -> tuple[float, float]:
    """The lowest and highest mean kept share the candidate's rule can reach on the probed items."""
    lo, hi = r_range(candidate)
    return tuple(mean(predict_kept(measured, build(base, candidate, alpha, beta, r, "probe"))) for r in (lo, hi))


def solve(base: Policy, candidate: Candidate, measured: Probe, target_kept: float, name: str) -> Solved:
    """Solve `r` so that the mean kept share over the probed items is nearest `target_kept`.

    Raises:
        CalibrationError: the target lies outside what the rule can reach (the message gives the range).
    """
    if candidate.quantiles is None:
        alpha, beta = base.allocator.params.alpha, base.allocator.params.beta
    else:
        alpha, beta = thresholds(measured, candidate.quantiles)

    def kept(r: float) -> float:
        return mean(predict_kept(measured, build(base, candidate, alpha, beta, r, name)))

    lo, hi = (round(bound * GRID) for bound in r_range(candidate))
    low_kept, high_kept = kept(lo / GRID), kept(hi / GRID)
    if not low_kept - 1e-9 <= target_kept <= high_kept + 1e-9:
        raise CalibrationError(unreachable_message(base, candidate, measured, target_kept, low_kept, high_kept))
    while hi - lo > 1:  # the smallest r on the grid reaching the target: kept(hi) >= target > kept(lo)
        middle = (lo + hi) // 2
        if kept(middle / GRID) >= target_kept - 1e-12:
            hi = middle
        else:
            lo = middle
    above, below = kept(hi / GRID), kept(lo / GRID)
    if below >= target_kept - 1e-12 or abs(above - target_kept) <= abs(below - target_kept):
        r, share = _short(hi, above, kept, up=True), above
    else:
        r, share = _short(lo, below, kept, up=False), below
    return Solved(candidate, build(base, candidate, alpha, beta, r, name), alpha, beta, share)


def _short(step: int, share: float, kept, up: bool) -> float:
    """The decimal with the fewest digits from `step / GRID` (upwards if `up`) that keeps the same share."""
    for digits in range(2, DIGITS):
        scale = 10 ** (DIGITS - digits)
        x = (-(-step // scale) if up else step // scale) * scale / GRID
        if kept(x) == share:
            return x
    return step / GRID


def unreachable_message(
    base: Policy, candidate: Candidate, measured: Probe, target: float, low: float, high: float
) -> str:
    layers = len(measured.pruned)
    unpruned = layers - sum(measured.pruned)
    why = f"{unpruned} of {layers} layers unpruned (start_layer {base.start_layer}"
    why += f", end_layer {base.end_layer})" if base.end_layer is not None else ")"
    if candidate.rule == "fixed":
        why += f"; fixed Δr {candidate.delta:g} keeps r in [{candidate.delta:g}, {1 - candidate.delta:g}]"
    return (
        f"target out of reach: removing {1 - target:.1%} (keeping {target:.1%}); on these items the policy "
        f"removes between {1 - high:.1%} and {1 - low:.1%} of the vision KV ({why})"
    )
