"""Per-policy figures from the per-item records: JSON and rich tables (the plot is in `plot.py`)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from plphp.evaluation.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_ci


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else None


def summarize(records: Sequence[Mapping[str, Any]], policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Figures per policy, in the order of `policies`.

    Per policy: items; exact match and per-token accuracy (overall and per task kind, single- and
    multi-image); mean prompt KV bytes per item before and after, and their ratio `kv_retained`;
    `vision_kv_kept`; median decode time per token over the batches; `same_as_full`, the share of
    answers identical to the `full` policy's (when it ran); attention recall overall and per layer
    (mean over items).

    Uncertainty (`plphp.evaluation.stats`): `exact_match_ci` and `token_accuracy_ci`, 95% percentile
    bootstrap intervals over items; `vs_full`, the paired comparison with `full` on the items both
    answered (None for `full` itself and when `full` did not run): `items`, `changed` (share of
    answers that differ from full's), `exact_match_diff` (this policy's exact match minus full's)
    with its paired bootstrap interval `exact_match_diff_ci`, the discordant pairs `full_only`
    (full right, this policy wrong) and `policy_only` (the other way), and `mcnemar_p`, the
    two-sided exact McNemar p-value of those pairs.
    """
    by_policy: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        by_policy[record["policy"]].append(record)
    reference = {r["id"]: r["prediction"] for r in by_policy.get("full", [])}
    summary: dict[str, dict[str, Any]] = {}
    for name in policies:
        rows = sorted(by_policy.get(name, []), key=lambda r: r["id"])
        if not rows:
            continue
        before = sum(r["kv_bytes_before"] for r in rows)
        after = sum(r["kv_bytes_after"] for r in rows)
        times = [r["decode_seconds_per_token"] for r in rows if r["decode_seconds_per_token"] is not None]
        layer_rows = [r["recall_per_layer"] for r in rows if r.get("recall_per_layer")]
        groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for r in rows:
            groups[r["kind"] or "all"].append(r)
            groups["multi-image" if r["num_images"] > 1 else "single-image"].append(r)
        summary[name] = {
            "items": len(rows),
            "exact_match": _mean(r["exact_match"] for r in rows),
            "token_accuracy": _mean(r["token_accuracy"] for r in rows),
            "exact_match_ci": bootstrap_ci(_present(r["exact_match"] for r in rows)),
            "token_accuracy_ci": bootstrap_ci(_present(r["token_accuracy"] for r in rows)),
            "kv_bytes_before": before / len(rows),
            "kv_bytes_after": after / len(rows),
            "kv_retained": after / before if before else 1.0,
            "vision_kv_kept": _mean(r["vision_kv_kept"] for r in rows),
            "decode_ms_per_token": statistics.median(times) * 1000 if times else None,
            "same_as_full": _mean(r["prediction"] == reference[r["id"]] for r in rows if r["id"] in reference),
            "recall": _mean(r["recall"] for r in rows),
            "recall_per_layer": [_mean(column) for column in zip(*layer_rows)] if layer_rows else None,
            "vs_full": _versus(rows, by_policy["full"]) if name != "full" and by_policy.get("full") else None,
            "by_kind": {
                kind: {
                    "items": len(group),
                    "exact_match": _mean(r["exact_match"] for r in group),
                    "token_accuracy": _mean(r["token_accuracy"] for r in group),
                    "recall": _mean(r["recall"] for r in group),
                }
                for kind, group in sorted(groups.items())
            },
        }
    return summary


def _present(values: Iterable[float | None]) -> list[float]:
    """The values that are there (not None, not NaN), as floats."""
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def _versus(rows: Sequence[Mapping[str, Any]], full_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The paired comparison of one policy's records with full's, on the items both have (by id)."""
    full = {r["id"]: r for r in full_rows}
    pairs = [(r, full[r["id"]]) for r in sorted(rows, key=lambda r: r["id"]) if r["id"] in full]
    if not pairs:
        return None
    mine = [float(bool(r["exact_match"])) for r, _ in pairs]
    theirs = [float(bool(f["exact_match"])) for _, f in pairs]
    full_only = sum(t > m for m, t in zip(mine, theirs))
    policy_only = sum(m > t for m, t in zip(mine, theirs))
    return {
        "items": len(pairs),
        "changed": sum(r["prediction"] != f["prediction"] for r, f in pairs) / len(pairs),
        "exact_match_diff": (sum(mine) - sum(theirs)) / len(pairs),
        "exact_match_diff_ci": paired_bootstrap_ci(mine, theirs),
        "full_only": full_only,
        "policy_only": policy_only,
        "mcnemar_p": mcnemar_exact(full_only, policy_only),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _ci(value: float | None, interval: Sequence[float] | None) -> str:
    """ "66.0% (52–78)": a share and its interval, in whole percent."""
    if value is None:
        return "—"
    if interval is None:
        return f"{value:.1%}"
    return f"{value:.1%} ({interval[0] * 100:.0f}–{interval[1] * 100:.0f})"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def summary_table(summary: Mapping[str, Mapping[str, Any]], title: str = "plphp eval") -> Any:
    """Two rich tables, one row per policy each: accuracy (with 95% intervals and the paired test
    against `full`), and what is kept and what it costs (KV bytes, attention recall, time). Both stay whole at 80 columns and in a pipe: cells
    wrap at spaces, and a narrower terminal lists each policy's figures instead."""
    from rich.console import Group

    from plphp.tables import FitTable

    accuracy = FitTable(
        title=f"{title}: accuracy",
        caption="exact, per token: accuracy, with a 95% bootstrap interval over items; = full: answers identical "
        "to full's; Δ exact: exact match minus full's on the same items (points); p: exact McNemar test of "
        "that difference",
    )
    cost = FitTable(
        title=f"{title}: KV cache, recall and time",
        caption="KV/item: prompt KV per item after pruning; KV kept, vision kept: shares of all / vision prompt KV "
        "entries kept; recall: attention recall during unpruned decoding; ms/token: median decode time per token",
    )
    for table, columns in (
        (accuracy, ("policy", "items", "exact", "per token", "= full", "Δ exact", "p")),
        (cost, ("policy", "KV/item", "KV kept", "vision kept", "recall", "ms/token")),
    ):
        for index, column in enumerate(columns):
            table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for name, row in summary.items():
        versus = row.get("vs_full") or {}
        diff = versus.get("exact_match_diff")
        accuracy.add_row(
            name,
            str(row["items"]),
            _ci(row["exact_match"], row.get("exact_match_ci")),
            _ci(row["token_accuracy"], row.get("token_accuracy_ci")),
            _fmt(row["same_as_full"], ".1%"),
            "—" if diff is None else f"{diff * 100:+.1f}",
            _p(versus.get("mcnemar_p")),
        )
        cost.add_row(
            name,
            f"{row['kv_bytes_after'] / 1024:,.0f}K",
            _fmt(row["kv_retained"], ".1%"),
            _fmt(row["vision_kv_kept"], ".1%"),
            _fmt(row["recall"], ".3f"),
            _fmt(row["decode_ms_per_token"], ".2f"),
        )
    return Group(accuracy, cost)


def plot_summary(summary: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "plphp eval") -> Path:
    """`plphp.evaluation.plot.plot_summary` (kept here, where it was first)."""
    from plphp.evaluation.plot import plot_summary as plot

    return plot(summary, path, title)
