"""Per-policy figures from the per-item records: JSON, a rich table and a PNG plot."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


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
            "kv_bytes_before": before / len(rows),
            "kv_bytes_after": after / len(rows),
            "kv_retained": after / before if before else 1.0,
            "vision_kv_kept": _mean(r["vision_kv_kept"] for r in rows),
            "decode_ms_per_token": statistics.median(times) * 1000 if times else None,
            "same_as_full": _mean(r["prediction"] == reference[r["id"]] for r in rows if r["id"] in reference),
            "recall": _mean(r["recall"] for r in rows),
            "recall_per_layer": [_mean(column) for column in zip(*layer_rows)] if layer_rows else None,
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


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def summary_table(summary: Mapping[str, Mapping[str, Any]], title: str = "plphp eval") -> Any:
    """A rich `Table`, one row per policy."""
    from rich.table import Table

    table = Table(
        title=title,
        caption="exact, per token: accuracy; KV/item: prompt KV per item after pruning; KV kept, vision kept: "
        "shares of all / vision prompt KV entries kept; ms/token: median decode time per token; "
        "= full: answers identical to full's; recall: attention recall during unpruned decoding",
    )
    columns = (
        "policy",
        "items",
        "exact",
        "per token",
        "KV/item",
        "KV kept",
        "vision kept",
        "ms/token",
        "= full",
        "recall",
    )
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for name, row in summary.items():
        table.add_row(
            name,
            str(row["items"]),
            _fmt(row["exact_match"], ".1%"),
            _fmt(row["token_accuracy"], ".1%"),
            f"{row['kv_bytes_after'] / 1024:,.0f}K",
            _fmt(row["kv_retained"], ".1%"),
            _fmt(row["vision_kv_kept"], ".1%"),
            _fmt(row["decode_ms_per_token"], ".2f"),
            _fmt(row["same_as_full"], ".1%"),
            _fmt(row["recall"], ".3f"),
        )
    return table


def plot_summary(summary: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "plphp eval") -> Path:
    """Write a PNG: accuracy (exact match, per token) and attention recall against the KV retained,
    one point per policy; and recall per layer."""
    # A Figure of its own (no pyplot): the process-wide plotting backend is left alone.
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(15, 4.2))
    quality, recall, layers = fig.subplots(1, 3)
    for name, row in summary.items():
        x = row["kv_retained"]
        for key, marker in (("exact_match", "o"), ("token_accuracy", "s")):
            if row[key] is not None:
                quality.scatter(x, row[key], marker=marker, color=f"C{list(summary).index(name)}")
        quality.annotate(name, (x, row["token_accuracy"] or 0.0), textcoords="offset points", xytext=(4, 4))
        if row["recall"] is not None:
            recall.scatter(x, row["recall"], color=f"C{list(summary).index(name)}")
            recall.annotate(name, (x, row["recall"]), textcoords="offset points", xytext=(4, 4))
        if row["recall_per_layer"]:
            layers.plot(range(len(row["recall_per_layer"])), row["recall_per_layer"], marker=".", label=name)
    quality.set(xlabel="prompt KV retained", ylabel="accuracy", title="accuracy (o exact match, ■ per token)")
    recall.set(xlabel="prompt KV retained", ylabel="attention recall", title="attention recall (unpruned decoding)")
    layers.set(xlabel="layer", ylabel="attention recall", title="recall per layer")
    for axis in (quality, recall):
        axis.set_xlim(0, 1.05)
        axis.set_ylim(-0.02, 1.05)
        axis.grid(alpha=0.3)
    layers.grid(alpha=0.3)
    if layers.lines:
        layers.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
