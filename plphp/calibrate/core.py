"""`calibrate`: fit PLPHP's tiers (α, β, r, Δr, and optionally the observation window) to a model.

Steps (docs/policies/plphp.md, "Calibrating the tiers"):

1. **Measure γ.** One prefill per batch under the base policy (per observation window searched):
   every layer's `γ` per item, and the prompts (images and their sizes).
2. **Place α and β** at quantiles of the per-layer mean `γ` over the pruned layers (tertiles by
   default), and **solve r** for the retention target (`plphp.calibrate.solve`).
3. **Check** every candidate with a real pruned prefill (its report's kept counts), and measure the
   attention recall of all candidates' keep-sets in ONE unpruned pass per batch (`recall_for`).
   With `maximize="recall"` the candidate of highest recall wins; the base policy with `r`
   re-solved to the same budget is measured alongside for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from plphp.calibrate.measure import (
    Batch,
    Probe,
    Progress,
    kept_per_item,
    make_batches,
    prefill,
    probe,
    recall_per_item,
    stop_ids,
)
from plphp.calibrate.solve import (
    DELTA_RULES,
    TERTILES,
    CalibrationError,
    Candidate,
    Solved,
    check_base,
    delta_ratio,
    mean,
    reachable,
    solve,
    window_of,
)
from plphp.evaluation.dataset import EvalItem
from plphp.policy import Policy, load_policy

#: What `maximize="recall"` searches: observation windows (with the base's first), Δr / r, and the
#: quantile pairs (β's, α's) of the per-layer mean γ.
SEARCH_WINDOWS: tuple[int | str, ...] = (1, "question", 4, 16)
SEARCH_RATIOS: tuple[float, ...] = (0.0, 1 / 3, 2 / 3)
SEARCH_QUANTILES: tuple[tuple[float, float], ...] = (TERTILES, (1 / 6, 1 / 2), (1 / 2, 5 / 6))
BASE_LABEL = "base"


@dataclass
class Result:
    """One candidate, solved and measured.

    Attributes:
        solved: the candidate, its policy, α, β and the predicted kept share.
        kept: per item, the kept vision-KV share measured from a real pruned prefill.
        recall: per item, the attention recall (None when not measured).
    """

    solved: Solved
    kept: list[float]
    recall: list[float] | None = None

    @property
    def mean_kept(self) -> float:
        return mean(self.kept)

    @property
    def mean_recall(self) -> float | None:
        values = [v for v in self.recall or [] if v == v]  # NaN-free
        return mean(values) if self.recall is not None and values else None


@dataclass
class Calibration:
    """What `calibrate` found.

    Attributes:
        policy: the calibrated policy (loadable again from `to_config()`).
        base: the base policy with r re-solved to the same budget (its α, β and window unchanged).
        target_kept: the mean vision-KV kept share asked for.
        best: the calibrated candidate's measurements; base_result the base's.
        gamma: `[items, num_layers]` γ of every item and layer under the calibrated window.
        pruned: per layer, whether the policy prunes it.
        reach: `(lowest, highest)` mean kept share the calibrated candidate's rule reaches.
        results: every candidate measured (the search, or just the calibrated and the base).
        settings: how it ran (items, batch size, rules, recall tokens, maximize).
    """

    policy: Policy
    base: Policy
    target_kept: float
    best: Result
    base_result: Result
    gamma: torch.Tensor
    pruned: list[bool]
    reach: tuple[float, float]
    results: list[Result] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> float:
        """Mean over items of the calibrated policy's measured vision-KV kept share."""
        return self.best.mean_kept

    @property
    def removed(self) -> float:
        return 1.0 - self.kept

    @property
    def recall(self) -> float | None:
        return self.best.mean_recall

    @property
    def base_recall(self) -> float | None:
        return self.base_result.mean_recall

    def to_config(self, policy: Policy | None = None) -> dict[str, Any]:
        """The policy as a config mapping (what the YAML holds): every key explicit, no preset."""
        config = dict((policy or self.policy).config)
        config.pop("preset", None)
        return {"name": config.pop("name"), **config}

    def tiers(self) -> list[str]:
        """Per layer, its tier by mean γ under the calibrated α and β ("unpruned" outside the range)."""
        params = self.policy.allocator.params
        out = []
        for layer, gamma in enumerate(layer_means_of(self.gamma)):
            if not self.pruned[layer]:
                out.append("unpruned")
            elif gamma >= params.alpha:
                out.append("attentive")
            elif gamma < params.beta:
                out.append("indifferent")
            else:
                out.append("balanced")
        return out


def layer_means_of(gamma: torch.Tensor) -> list[float]:
    return [float(v) for v in gamma.nanmean(0)] if gamma.numel() else []


def calibrate(
    model: Any,
    processor: Any,
    items: Sequence[EvalItem],
    base_policy: Any = "plphp",
    *,
    target_retention: float | None = None,
    target_removed: float | None = None,
    maximize: str | None = None,
    delta_rule: str = "proportional",
    quantiles: tuple[float, float] = TERTILES,
    batch_size: int = 4,
    recall: bool = True,
    recall_tokens: int = 8,
    name: str = "calibrated",
    progress: Progress | None = None,
) -> Calibration:
    """Fit a tiered allocator (`vision_tiers`) to `model` on `items`.

    Args:
        model, processor: a supported vision-language model and its processor.
        items: the calibration set (`builtin_items`, `load_jsonl`); no labels are read.
        base_policy: a policy using `vision_tiers` (preset, file, mapping or `Policy`).
        target_retention: mean vision-KV kept share to reach (over items, every layer counted).
        target_removed: `1 − target_retention`; give at most one. Neither: the base policy's own
            retention on these items.
        maximize: None (α, β at `quantiles`, window and Δr / r of the base) or "recall" (search
            windows, Δr / r and quantile pairs for the highest attention recall at the budget).
        delta_rule: "proportional" (Δr / r of the base kept) or "fixed" (Δr of the base kept).
        quantiles: `(β's, α's)` quantile of the per-layer mean γ (default the tertiles).
        batch_size: items per prefill.
        recall: measure attention recall (always on with `maximize="recall"`).
        recall_tokens: decoding steps of the unpruned recall pass.
        name: the calibrated policy's `name:`.
        progress: called with (stage, done, total).

    Raises:
        CalibrationError: both targets, a target out of [0, 1] or out of reach, a base policy
            without `vision_tiers`, an unknown `maximize` or `delta_rule`, no items.
    """
    base = load_policy(base_policy)
    check_base(base)
    target = _target(target_retention, target_removed)
    if maximize not in (None, "recall"):
        raise CalibrationError(f"maximize: {maximize!r} is not supported; use 'recall' or nothing")
    if delta_rule not in DELTA_RULES:
        raise CalibrationError(f"delta rule: {delta_rule!r} is not one of {', '.join(DELTA_RULES)}")
    if not items:
        raise CalibrationError("calibration: no items")
    if not 0.0 <= quantiles[0] <= quantiles[1] <= 1.0:
        raise CalibrationError(f"quantiles: need 0 <= beta's <= alpha's <= 1, got {quantiles[0]}, {quantiles[1]}")
    batches = make_batches(processor, items, batch_size, model.device)
    window = window_of(base)
    probes = {window: probe(model, batches, base, progress)}
    if target is None:
        target = mean([k for b in batches for k in kept_per_item(prefill(model, b, base)[0], b)])
    params = base.allocator.params
    rule = {"rule": delta_rule, "ratio": delta_ratio(base), "delta": params.delta}
    chosen = Candidate(_label(window, quantiles, delta_rule, rule["ratio"], params.delta), window, quantiles, **rule)
    base_candidate = Candidate(BASE_LABEL, window, None, **rule)
    candidates = [base_candidate, chosen]
    if maximize == "recall":
        candidates += _search_space(base, window, chosen)
        for extra in {c.window for c in candidates} - set(probes):
            probes[extra] = probe(model, batches, load_policy(base, collector={"window": extra}))
    base_name = f"{base.name}-at-budget"
    solved = [solve(base, c, probes[c.window], target, base_name if c is base_candidate else name) for c in candidates]
    results = _measure(model, processor, batches, solved, recall or maximize == "recall", recall_tokens, progress)
    base_result, own = results[0], results[1:]
    best = own[0] if maximize is None else max(own, key=lambda r: (r.mean_recall or 0.0, -own.index(r)))
    measured = probes[best.solved.candidate.window]
    lows_highs = _reach(base, best.solved, measured)
    return Calibration(
        policy=best.solved.policy,
        base=base_result.solved.policy,
        target_kept=target,
        best=best,
        base_result=base_result,
        gamma=measured.per_item,
        pruned=list(measured.pruned),
        reach=lows_highs,
        results=results,
        settings={
            "items": len(items),
            "batch_size": batch_size,
            "base_policy": base.name,
            "maximize": maximize,
            "delta_rule": delta_rule,
            "quantiles": list(quantiles),
            "recall_tokens": recall_tokens,
            "candidates": len(results) - 1,
        },
    )


def _target(retention: float | None, removed: float | None) -> float | None:
    if retention is not None and removed is not None:
        raise CalibrationError("give either a target retention or a target removed share, not both")
    value = retention if removed is None else 1.0 - removed
    if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        which = "target retention" if removed is None else "target removed"
        raise CalibrationError(
            f"{which}: must be a number between 0 and 1, got {retention if removed is None else removed!r}"
        )
    return None if value is None else float(value)


def _label(window: Any, quantiles: tuple[float, float] | None, rule: str, ratio: float, delta: float) -> str:
    tiers = "α,β base" if quantiles is None else f"q={quantiles[0]:.2f},{quantiles[1]:.2f}"
    spread = f"Δr/r={ratio:.2f}" if rule == "proportional" else f"Δr={delta:g}"
    return f"w={window} {tiers} {spread}"


def _search_space(base: Policy, window: Any, chosen: Candidate) -> list[Candidate]:
    """The grid `maximize="recall"` searches, the default candidate excluded (it comes first)."""
    windows = [window] if base.collector.name != "last_token" else list(dict.fromkeys([window, *SEARCH_WINDOWS]))
    out = []
    for w in windows:
        for quantiles in SEARCH_QUANTILES:
            for ratio in SEARCH_RATIOS:
                if ratio == 0.0 and quantiles != TERTILES:
                    continue  # one tier only: α and β change nothing
                candidate = Candidate(
                    _label(w, quantiles, "proportional", ratio, 0.0), w, quantiles, "proportional", ratio
                )
                if candidate.label != chosen.label:
                    out.append(candidate)
    return out


def _measure(
    model: Any,
    processor: Any,
    batches: Sequence[Batch],
    solved: Sequence[Solved],
    with_recall: bool,
    recall_tokens: int,
    progress: Progress | None,
) -> list[Result]:
    """A real pruned prefill per candidate and batch (kept shares, keep-sets), then one unpruned recall pass."""
    results = [Result(s, [], [] if with_recall else None) for s in solved]
    stops = stop_ids(model, processor)
    for index, batch in enumerate(batches):
        reports = {}
        for number, result in enumerate(results):
            report, _ = prefill(model, batch, result.solved.policy)
            result.kept.extend(kept_per_item(report, batch))
            reports[str(number)] = report
        if with_recall:
            recalls = recall_per_item(model, batch, reports, recall_tokens, stops)
            for number, result in enumerate(results):
                result.recall.extend(recalls[str(number)])
        if progress is not None:
            progress("measuring candidates", index + 1, len(batches))
    return results


def _reach(base: Policy, solved: Solved, measured: Probe) -> tuple[float, float]:
    return reachable(base, solved.candidate, measured, solved.alpha, solved.beta)


__all__ = ["Calibration", "CalibrationError", "Result", "calibrate"]
