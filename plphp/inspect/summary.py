"""The data of every `plphp inspect` figure, as one JSON-ready dict (`inspect.json`).

Sections: `policies`, `vision_attention`, `retention`, `kept_patches`, `recall`, `head_diversity`,
and `reports` (per item and policy, every layer's γ, retention, budget and kept positions, as the
session's `PruningReport` holds them). NaN is written as null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from plphp.inspect.collect import ItemRun, head_matrix, jaccard, keep_sets, mean_pairwise
from plphp.policy import Policy

#: The tiers of PLPHP's allocator, and the mark of layers outside the pruned range.
TIERS = ("attentive", "balanced", "indifferent", "unpruned")


def policy_info(policy: Policy, num_layers: int) -> dict[str, Any]:
    """What the figures need of a policy: its range and, when its allocator has them, α and β."""
    params = policy.allocator.params
    alpha, beta = getattr(params, "alpha", None), getattr(params, "beta", None)
    return {
        "description": policy.describe(),
        "stage": policy.stage,
        "start_layer": policy.start_layer,
        "end_layer": policy.end_layer,
        "pruned_layers": [policy.prunes_layer(i) for i in range(num_layers)],
        "alpha": alpha if isinstance(alpha, float) else None,
        "beta": beta if isinstance(beta, float) else None,
    }


def tier(gamma: float, info: dict[str, Any], layer: int) -> str:
    """The layer's tier for a policy: unpruned outside its range, else by α and β (balanced without them)."""
    if not info["pruned_layers"][layer]:
        return "unpruned"
    if info["alpha"] is None or info["beta"] is None or math.isnan(gamma):
        return "balanced"
    return "attentive" if gamma >= info["alpha"] else "indifferent" if gamma < info["beta"] else "balanced"


def _nanmean(rows: Sequence[Sequence[float]]) -> list[float]:
    """Column means ignoring NaN (NaN where a column has none)."""
    table = torch.tensor(rows, dtype=torch.float64)
    return table.nanmean(0).tolist() if table.numel() else []


def _quantiles(values: list[list[float]], q: float) -> list[float]:
    out = []
    for row in values:
        finite = torch.tensor([v for v in row if not math.isnan(v)], dtype=torch.float64)
        out.append(float(torch.quantile(finite, q)) if finite.numel() else math.nan)
    return out


def vision_attention(runs: list[ItemRun], name: str, info: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """γ per layer for one policy: the mean over items, the heads' spread over heads and items, and tiers."""
    per_item = [run.runs[name].gamma for run in runs]
    mean = _nanmean(per_item)
    heads = [[v for run in runs for v in run.runs[name].head_gamma[layer]] for layer in range(num_layers)]
    head_mean = [_nanmean([run.runs[name].head_gamma[layer] for run in runs]) for layer in range(num_layers)]
    counts = [{t: 0 for t in TIERS} for _ in range(num_layers)]
    for gammas in per_item:
        for layer, g in enumerate(gammas):
            counts[layer][tier(g, info, layer)] += 1
    return {
        "mean": mean,
        "per_item": per_item,
        "head_mean": head_mean,
        "head_min": _quantiles(heads, 0.0),
        "head_p10": _quantiles(heads, 0.1),
        "head_p90": _quantiles(heads, 0.9),
        "head_max": _quantiles(heads, 1.0),
        "tier": [tier(g, info, layer) for layer, g in enumerate(mean)],
        "tier_counts": counts,
        "alpha": info["alpha"],
        "beta": info["beta"],
        "start_layer": info["start_layer"],
        "measured": any(not math.isnan(g) for g in mean),
    }


def retention(runs: list[ItemRun], name: str, num_layers: int) -> dict[str, Any]:
    """Retention and kept vision tokens (per KV head) per layer, mean over items."""
    rates, budgets, fractions = [], [], []
    for run in runs:
        report = run.runs[name].report
        vision = report.num_vision[0] if report is not None else 0
        if report is None or not report.layers:
            rates.append([1.0] * num_layers)
            budgets.append([float(vision)] * num_layers)
        else:
            rates.append([float(layer.retention[0]) for layer in report.layers])
            budgets.append([float(layer.budget[0]) for layer in report.layers])
        fractions.append([b / vision if vision else 1.0 for b in budgets[-1]])
    return {
        "mean": _nanmean(rates),
        "kept_mean": _nanmean(budgets),
        "kept_fraction": _nanmean(fractions),
        "per_item": rates,
        "kept_per_item": budgets,
    }


def recall(runs: list[ItemRun], name: str) -> dict[str, Any] | None:
    """Attention recall per layer and query head (mean over the items where it was measured)."""
    tables = [run.runs[name].recall for run in runs if run.runs[name].recall is not None]
    if not tables:
        return None
    stacked = torch.tensor(tables, dtype=torch.float64)  # [items, layers, H]
    layer_head = stacked.nanmean(0)
    return {"layer_head": layer_head.tolist(), "layers": layer_head.nanmean(-1).tolist(), "items": len(tables)}


def head_diversity(
    runs: list[ItemRun], names: list[str], vision: list[list[int]], layers: list[int], num_layers: int, heads: int
) -> dict[str, Any]:
    """Jaccard overlap of keep-sets: between the KV heads of each layer (pruned layers only), the heads ×
    heads matrix of `layers`, and, per layer, between the first policy and each other one (same head)."""
    within: dict[str, list[float]] = {}
    matrices: dict[str, dict[str, list[list[float]]]] = {}
    for name in names:
        per_layer = []
        for layer in range(num_layers):
            values = []
            for run, positions in zip(runs, vision):
                report = run.runs[name].report
                if report is None or layer >= len(report.layers) or not report.layers[layer].pruned:
                    continue
                values.append(mean_pairwise(keep_sets(report, positions, layer, heads)))
            per_layer.append(sum(values) / len(values) if values else math.nan)
        within[name] = per_layer
        matrices[name] = {}
        for layer in layers:
            tables = [
                head_matrix(sets)
                for run, positions in zip(runs, vision)
                if (sets := keep_sets(run.runs[name].report, positions, layer, heads)) is not None
            ]
            if tables:
                matrices[name][str(layer)] = torch.tensor(tables, dtype=torch.float64).mean(0).tolist()
    between: dict[str, list[float]] = {}
    for other in names[1:]:
        per_layer = []
        for layer in range(num_layers):
            values = []
            for run, positions in zip(runs, vision):
                a = keep_sets(run.runs[names[0]].report, positions, layer, heads)
                b = keep_sets(run.runs[other].report, positions, layer, heads)
                if a is not None and b is not None:
                    values.append(sum(jaccard(x, y) for x, y in zip(a, b)) / len(a))
            per_layer.append(sum(values) / len(values) if values else math.nan)
        between[f"{names[0]} vs {other}"] = per_layer
    return {"within": within, "matrices": matrices, "between": between}


def item_reports(runs: list[ItemRun]) -> list[dict[str, Any]]:
    """Per item and policy, every layer as the session's report holds it (plus the per-head γ)."""
    out = []
    for run in runs:
        entry: dict[str, Any] = {"id": run.item.id, "question": run.item.question, "policies": {}}
        for name, policy_run in run.runs.items():
            report = policy_run.report
            layers = []
            for layer in report.layers if report is not None else []:
                kept = layer.kept_positions
                layers.append(
                    {
                        "layer": layer.layer_idx,
                        "pruned": layer.pruned,
                        "gamma": float(layer.vision_attention[0]),
                        "retention": float(layer.retention[0]),
                        "budget": int(layer.budget[0]),
                        "kept": [int(k) for k in layer.kept[0]],
                        "kept_positions": None
                        if kept is None
                        else [[int(p) for p in row if p >= 0] for row in kept[0]],
                    }
                )
            entry["policies"][name] = {
                "note": report.note if report is not None else "no vision tokens",
                "num_vision": report.num_vision[0] if report is not None else 0,
                "gamma": policy_run.gamma,
                "head_gamma": policy_run.head_gamma,
                "layers": layers,
            }
        out.append(entry)
    return out


def clean(value: Any) -> Any:
    """`value` with NaN and infinities as None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value
