"""`eval.png`: each policy's accuracy and attention recall against the KV it keeps, with intervals."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def _style(index: int) -> dict[str, Any]:
    return {"color": f"C{index % 10}", "marker": MARKERS[index % len(MARKERS)]}


def _dodges(xs: list[float], close: float = 0.03, step: float = 7.0) -> list[float]:
    """Horizontal offsets (in points) that set side by side the policies whose KV retained is within
    `close` of each other, so that their error bars do not cover one another."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    offsets = [0.0] * len(xs)
    group: list[int] = []
    for index in [*order, None]:
        if index is not None and group and xs[index] - xs[group[-1]] <= close:
            group.append(index)
            continue
        for rank, member in enumerate(group):
            offsets[member] = (rank - (len(group) - 1) / 2) * step
        group = [] if index is None else [index]
    return offsets


def plot_summary(summary: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "plphp eval") -> Path:
    """Write a PNG of four panels: exact match, per-token accuracy and attention recall against the
    prompt KV retained (one point per policy; accuracy with its 95% bootstrap interval as error
    bars), and recall per layer. Policies are told apart by colour and marker, named in one legend;
    points of policies whose KV retained is almost the same are drawn side by side, a few points apart."""
    # A Figure of its own (no pyplot): the process-wide plotting backend is left alone.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.transforms import offset_copy

    path = Path(path)
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    (exact, token), (recall, layers) = fig.subplots(2, 2)
    handles = []
    dodges = _dodges([row["kv_retained"] for row in summary.values()])
    for index, (name, row) in enumerate(summary.items()):
        style = _style(index)
        shifted = {
            axis: offset_copy(axis.transData, fig=fig, x=dodges[index], units="points")
            for axis in (exact, token, recall)
        }
        handles.append(Line2D([], [], linestyle="none", markersize=7, label=name, **style))
        x = row["kv_retained"]
        for axis, key in ((exact, "exact_match"), (token, "token_accuracy")):
            if row[key] is None:
                continue
            interval = row.get(f"{key}_ci")
            yerr = None
            if interval is not None:
                yerr = [[max(row[key] - interval[0], 0.0)], [max(interval[1] - row[key], 0.0)]]
            axis.errorbar(
                [x], [row[key]], yerr=yerr, linestyle="none", capsize=4, markersize=7, transform=shifted[axis], **style
            )
        if row["recall"] is not None:
            recall.plot([x], [row["recall"]], linestyle="none", markersize=7, transform=shifted[recall], **style)
        if row["recall_per_layer"]:
            per_layer = row["recall_per_layer"]
            layers.plot(range(len(per_layer)), per_layer, markersize=4, linewidth=1.2, **style)
    exact.set(xlabel="prompt KV retained", ylabel="exact match", title="exact match (95% CI over items)")
    token.set(xlabel="prompt KV retained", ylabel="per-token accuracy", title="per-token accuracy (95% CI)")
    recall.set(xlabel="prompt KV retained", ylabel="attention recall", title="attention recall (unpruned decoding)")
    layers.set(xlabel="layer", ylabel="attention recall", title="recall per layer")
    for axis in (exact, token, recall):
        axis.set_xlim(0, 1.05)
        axis.set_ylim(-0.02, 1.05)
        axis.grid(alpha=0.3)
    layers.grid(alpha=0.3)
    if handles:
        fig.legend(handles=handles, loc="outside right center", title="policy")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
