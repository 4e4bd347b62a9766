"""The bench's outputs: a rich table, JSON, Markdown and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plphp.tables import FitTable


def _spread(summary: dict[str, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    """ "median (min–max)" of a summary, each value times `scale`; "—" when there is none."""
    if summary is None:
        return "—"
    median, low, high = (summary[key] * scale for key in ("median", "min", "max"))
    return f"{median:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def _ms(summary: dict[str, float] | None) -> str:
    return _spread(summary, 1e3)


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:.1f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


COLUMNS = (
    ("policy", "label"),
    ("decode ms/step", "step"),
    ("tokens/s", "rate"),
    ("prefill ms", "prefill"),
    ("TTFT ms", "ttft"),
    ("compress ms", "compress"),
    ("KV MiB", "kv"),
    ("peak decode MiB", "peak"),
    ("speedup", "speedup"),
    ("paired", "paired"),
    ("ideal (BW model)", "ideal"),
    ("of ideal", "of_ideal"),
    ("floor ms/step", "floor"),
    ("attn ms/step", "attention"),
    ("attn BW share (pruned / other)", "attention_share"),
    ("vs full-fast", "vs_fast"),
    ("ideal vs full-fast", "ideal_fast"),
    ("of ideal vs full-fast", "of_ideal_fast"),
)


def _share(row: dict[str, Any]) -> str:
    shares = [row.get(f"attention_bandwidth_share_{group}") for group in ("pruned", "other")]
    if all(share is None for share in shares):
        return "—"
    return " / ".join("—" if share is None else f"{share:.0%}" for share in shares)


def _cells(row: dict[str, Any]) -> dict[str, str]:
    return {
        "label": row["label"],
        "step": _ms(row["step_s"]),
        "rate": _spread(row["tokens_per_s"]),
        "prefill": _ms(row["prefill_s"]),
        "ttft": _ms(row["ttft_s"]),
        "compress": _ms(row["compress_s"]),
        "kv": _mib(row["kv_bytes"]),
        "peak": _spread(row["peak_decode"], 2**-20, 0),
        "speedup": _ratio(row.get("speedup")),
        "paired": _ratio(row.get("speedup_paired_median")),
        "ideal": _ratio(row.get("ideal_speedup")),
        "of_ideal": _ratio(row.get("of_ideal")),
        "floor": f"{row['floor_step_s'] * 1e3:.1f}",
        "attention": _ms(row.get("attention_s_per_step")),
        "attention_share": _share(row),
        "vs_fast": _ratio(row.get("speedup_vs_full_fast")),
        "ideal_fast": _ratio(row.get("ideal_speedup_vs_full_fast")),
        "of_ideal_fast": _ratio(row.get("of_ideal_vs_full_fast")),
    }


def rich_table(rows: list[dict[str, Any]], title: str, caption: str) -> FitTable:
    """A table that wraps (no cell cut to "…") or, in a narrow terminal, lists each policy's figures."""
    table = FitTable(title=title, caption=caption)
    for header, _ in COLUMNS:
        table.add_column(header, justify="left" if header == "policy" else "right", no_wrap=header == "policy")
    for row in rows:
        cells = _cells(row)
        table.add_row(*(cells[key] for _, key in COLUMNS))
    return table


def markdown(rows: list[dict[str, Any]], setup: dict[str, Any], notes: list[str]) -> str:
    """A Markdown page: the setup, the notes, and the table (median (min–max) over the runs)."""
    lines = ["# plphp bench", ""]
    if setup.get("command"):
        lines += ["```bash", setup["command"], "```", ""]
    lines += [f"- {note}" for note in notes]
    lines += ["", "| " + " | ".join(header for header, _ in COLUMNS) + " |"]
    lines.append("| " + " | ".join("---" for _ in COLUMNS) + " |")
    for row in rows:
        cells = _cells(row)
        lines.append("| " + " | ".join(cells[key] for _, key in COLUMNS) + " |")
    lines += [
        "",
        "Times are medians (min–max) over the interleaved runs; speedup = unpruned decode step / this one; "
        "vs full-fast = the full-fast step / this one (the same grouped decode kernel, nothing pruned). "
        "attn BW share = K/V bytes read per second in the attention calls of the pruned / other layers, "
        "as a share of the measured read bandwidth.",
    ]
    lines += ["", "```json", json.dumps(setup, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str))


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Speedup (measured and bandwidth-model ideal) and KV bytes against the kept vision fraction."""
    # A Figure of its own (no pyplot): the process-wide plotting backend is left alone.
    from matplotlib.figure import Figure

    reference = [row for row in rows if row["label"] == "unpruned"]
    points = [row for row in rows if row.get("speedup") is not None and row["label"] != "unpruned"]
    points.sort(key=_kept)
    xs = [_kept(row) for row in points]
    figure = Figure(figsize=(11, 4.2))
    left, right = figure.subplots(1, 2)
    left.plot(xs, [p["speedup"] for p in points], "o-", label="measured")
    left.plot(xs, [p["ideal_speedup"] for p in points], "s--", label="bandwidth model (ideal)")
    for x, p in zip(xs, points):
        left.annotate(p["label"], (x, p["speedup"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_xlabel("vision KV kept (fraction, from the report)")
    left.set_ylabel("decode speedup vs unpruned")
    right.plot(xs, [p["kv_bytes"] / 2**20 for p in points], "o-", label="plphp cache")
    for row in reference:  # transformers' DynamicCache: the reference, drawn apart from the curve
        left.plot([1.0], [1.0], "k*", markersize=9, label="unpruned (DynamicCache)")
        right.plot([1.0], [row["kv_bytes"] / 2**20], "k*", markersize=9, label="unpruned (DynamicCache)")
    left.legend()
    right.legend()
    right.set_xlabel("vision KV kept (fraction, from the report)")
    right.set_ylabel("KV cache after prefill (MiB, real tensors)")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _kept(row: dict[str, Any]) -> float:
    report = row.get("report")
    if report is None:
        return 1.0
    return report["vision_kept_fraction"]
