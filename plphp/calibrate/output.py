"""A calibration's outputs: the policy YAML (and the base re-solved to the same budget), a JSON report
and the rich tables the command prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from plphp.calibrate.core import Calibration, layer_means_of
from plphp.calibrate.solve import CalibrationError

#: The rules, as the report and the tables state them.
RULES = {
    "alpha_beta": "beta and alpha at the {q0:.3g} and {q1:.3g} quantiles of the per-layer mean γ over the pruned "
    "layers (rounded to 3 decimals)",
    "r": "r bisected (4 decimals) so that the mean over items of the vision-KV kept share (every layer counted) "
    "is nearest the target; Δr {rule}",
    "maximize": "the candidate (window, Δr / r, quantile pair; r re-solved for each) of highest mean attention "
    "recall over the items",
}


def rules(calibration: Calibration) -> dict[str, str]:
    settings = calibration.settings
    q0, q1 = settings["quantiles"]
    rule = (
        "= (Δr / r of the base) · r, capped so that r + Δr ≤ 1"
        if settings["delta_rule"] == "proportional"
        else "fixed at the base's"
    )
    out = {"alpha_beta": RULES["alpha_beta"].format(q0=q0, q1=q1), "r": RULES["r"].format(rule=rule)}
    if settings["maximize"] == "recall":
        out["maximize"] = RULES["maximize"]
        out["alpha_beta"] = "the winning candidate's quantile pair of the per-layer mean γ (rounded to 3 decimals)"
    return out


def to_dict(calibration: Calibration) -> dict[str, Any]:
    """The JSON report: fitted values, γ per layer and tiers, retention and recall reached, the candidates."""
    params = calibration.policy.allocator.params
    gamma = calibration.gamma
    tiers = calibration.tiers()
    layers = []
    for index, mean_gamma in enumerate(layer_means_of(gamma)):
        column = gamma[:, index]
        column = column[~column.isnan()]
        layers.append(
            {
                "layer": index,
                "pruned": calibration.pruned[index],
                "gamma_mean": round(mean_gamma, 6),
                "gamma_min": round(float(column.min()), 6) if column.numel() else None,
                "gamma_median": round(float(column.median()), 6) if column.numel() else None,
                "gamma_max": round(float(column.max()), 6) if column.numel() else None,
                "tier": tiers[index],
                "share_attentive": _share(column, lambda g: g >= params.alpha) if calibration.pruned[index] else None,
                "share_indifferent": _share(column, lambda g: g < params.beta) if calibration.pruned[index] else None,
            }
        )
    return {
        "policy": calibration.to_config(),
        "base_at_same_budget": calibration.to_config(calibration.base),
        "fitted": {
            "window": getattr(calibration.policy.collector.params, "window", None),
            "alpha": params.alpha,
            "beta": params.beta,
            "retention": params.retention,
            "delta": params.delta,
        },
        "target_kept": calibration.target_kept,
        "target_removed": 1.0 - calibration.target_kept,
        "kept": calibration.kept,
        "removed": calibration.removed,
        "reachable_kept": list(calibration.reach),
        "recall": calibration.recall,
        "base_recall": calibration.base_recall,
        "base_kept": calibration.base_result.mean_kept,
        "rules": rules(calibration),
        "settings": calibration.settings,
        "layers": layers,
        "candidates": [
            {
                "label": result.solved.candidate.label,
                "policy": result.solved.policy.name,
                "window": result.solved.candidate.window,
                "alpha": result.solved.alpha,
                "beta": result.solved.beta,
                "retention": result.solved.policy.allocator.params.retention,
                "delta": result.solved.policy.allocator.params.delta,
                "kept_predicted": result.solved.predicted,
                "kept": result.mean_kept,
                "recall": result.mean_recall,
            }
            for result in calibration.results
        ],
    }


def _share(column: Any, test: Any) -> float | None:
    return round(float(test(column).float().mean()), 4) if column.numel() else None


def write_calibration(calibration: Calibration, out: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Write the policy YAML to `out`, the base re-solved to the same budget next to it (`<stem>-base.yaml`)
    and the JSON report (`<stem>.json`). Returns the three paths."""
    import yaml

    out = Path(out)
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise CalibrationError(f"--out: {str(out)!r} must end in .yaml or .yml")
    if out.is_dir():
        raise CalibrationError(f"--out: {str(out)!r} is a directory; give a file name such as calibrated.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    base_path = out.with_name(f"{out.stem}-base{out.suffix}")
    json_path = out.with_suffix(".json")
    settings = calibration.settings
    header = (
        f"# plphp calibrate: base policy {settings['base_policy']!r}, {settings['items']} items, "
        f"vision KV kept {calibration.kept:.1%} (removed {calibration.removed:.1%})\n"
    )
    for path, policy in ((out, calibration.policy), (base_path, calibration.base)):
        body = yaml.safe_dump(calibration.to_config(policy), sort_keys=False, allow_unicode=True)
        path.write_text(header + body)
    json_path.write_text(json.dumps(to_dict(calibration), indent=2, ensure_ascii=False) + "\n")
    return out, base_path, json_path


def tables(calibration: Calibration) -> list[Any]:
    """The rich tables: fitted values and figures, γ per layer with the tiers, and the best candidates."""
    from plphp.tables import FitTable

    data = to_dict(calibration)
    fitted = FitTable(title=f"plphp calibrate: {calibration.policy.name}", caption=_caption(data))
    for column in ("value", "calibrated", f"{calibration.base.name}", "how"):
        fitted.add_column(column, justify="left" if column in ("value", "how") else "right")
    base = calibration.base.allocator.params
    found = data["fitted"]
    base_window = getattr(calibration.base.collector.params, "window", None)
    rule_text = data["rules"]
    fitted.add_row(
        "window", str(found["window"]), str(base_window), "searched" if "maximize" in rule_text else "the base's"
    )
    fitted.add_row("α", f"{found['alpha']:g}", f"{base.alpha:g}", "rule 1")
    fitted.add_row("β", f"{found['beta']:g}", f"{base.beta:g}", "rule 1")
    fitted.add_row("r", f"{found['retention']:g}", f"{base.retention:g}", "rule 2")
    fitted.add_row("Δr", f"{found['delta']:g}", f"{base.delta:g}", "rule 2")
    fitted.add_row(
        "vision KV removed",
        f"{data['removed']:.1%}",
        f"{1 - data['base_kept']:.1%}",
        f"target {data['target_removed']:.1%}; reachable {1 - data['reachable_kept'][1]:.1%} to "
        f"{1 - data['reachable_kept'][0]:.1%}",
    )
    if data["recall"] is not None:
        fitted.add_row(
            "attention recall",
            f"{data['recall']:.4f}",
            f"{data['base_recall']:.4f}",
            "rule 3 (higher is better)" if "maximize" in rule_text else "higher is better",
        )
    layers = FitTable(title="γ per layer (over the calibration items) and tiers", name_blocks=True)
    for column in ("layer", "γ mean", "min", "median", "max", "tier", "≥ α", "< β"):
        layers.add_column(column, justify="right")
    for row in data["layers"]:
        layers.add_row(
            str(row["layer"]),
            *(f"{row[key]:.3f}" if row[key] is not None else "-" for key in ("gamma_mean", "gamma_min")),
            *(f"{row[key]:.3f}" if row[key] is not None else "-" for key in ("gamma_median", "gamma_max")),
            row["tier"],
            *(f"{row[key]:.0%}" if row[key] is not None else "-" for key in ("share_attentive", "share_indifferent")),
        )
    out = [fitted, _rules_text(rule_text), layers]
    if calibration.settings["maximize"] == "recall":
        ranked = sorted(data["candidates"], key=lambda c: -(c["recall"] or 0.0))
        search = FitTable(title=f"search: the best of {len(ranked) - 1} candidates and the base (r re-solved for each)")
        for column in ("candidate", "α", "β", "r", "Δr", "removed", "recall"):
            search.add_column(column, justify="left" if column == "candidate" else "right")
        for c in ranked[:8]:
            search.add_row(
                c["label"] if c["label"] != "base" else f"base ({calibration.base.name})",
                f"{c['alpha']:g}",
                f"{c['beta']:g}",
                f"{c['retention']:g}",
                f"{c['delta']:g}",
                f"{1 - c['kept']:.1%}",
                f"{c['recall']:.4f}" if c["recall"] is not None else "-",
            )
        out.append(search)
    return out


def _rules_text(rule_text: dict[str, str]) -> Any:
    from rich.text import Text

    lines = [
        f"rule {n}: {rule_text[key]}" for n, key in enumerate(("alpha_beta", "r", "maximize"), 1) if key in rule_text
    ]
    return Text("\n".join(lines))


def _caption(data: dict[str, Any]) -> str:
    tiers = [row["tier"] for row in data["layers"] if row["pruned"]]
    counts = ", ".join(f"{tiers.count(t)} {t}" for t in ("attentive", "balanced", "indifferent"))
    return f"pruned layers by mean γ: {counts}"
