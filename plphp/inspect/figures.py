"""The figures of `plphp inspect`, drawn from its JSON data (`plphp.inspect.summary`) on `Figure`s of
their own (no pyplot: the process-wide plotting backend is left alone)."""

from __future__ import annotations

import math
from typing import Any

TIER_COLOURS = {"attentive": "#d62728", "balanced": "#1f77b4", "indifferent": "#ff7f0e", "unpruned": "#9e9e9e"}
POLICY_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(rows, cols, squeeze=False)


def _nan(values: list[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def gamma_figure(data: dict[str, Any]) -> Any:
    """γ per layer for each policy that measures it: the mean over items (points coloured by tier), the
    heads' 10-90 % band and min / max over heads and items, α and β, layers before start_layer shaded."""
    measured = [name for name, section in data["vision_attention"].items() if section["measured"]]
    fig, axes = _figure(7.5, 3.2 * max(len(measured), 1), max(len(measured), 1))
    if not measured:
        axes[0, 0].text(0.5, 0.5, "no policy measures vision attention", ha="center", va="center")
        axes[0, 0].set_axis_off()
        return fig
    for row, name in enumerate(measured):
        axis, section = axes[row, 0], data["vision_attention"][name]
        layers = list(range(len(section["mean"])))
        axis.fill_between(layers, _nan(section["head_p10"]), _nan(section["head_p90"]), color="#1f77b4", alpha=0.15)
        axis.plot(layers, _nan(section["head_min"]), ":", color="#1f77b4", lw=0.8, label="heads: min / max")
        axis.plot(layers, _nan(section["head_max"]), ":", color="#1f77b4", lw=0.8)
        axis.plot(layers, _nan(section["mean"]), "-", color="#555555", lw=1)
        for kind, colour in TIER_COLOURS.items():
            xs = [i for i in layers if section["tier"][i] == kind]
            ys = [_nan(section["mean"])[i] for i in xs]
            if xs:
                axis.scatter(xs, ys, color=colour, zorder=3, s=28, label=f"{kind} ({len(xs)})")
        if section["start_layer"]:
            axis.axvspan(-0.5, section["start_layer"] - 0.5, color="#9e9e9e", alpha=0.15, lw=0)
        for key, style in (("alpha", "--"), ("beta", "-.")):
            if section[key] is not None:
                axis.axhline(section[key], ls=style, color="black", lw=0.8)
                axis.annotate(
                    f"{'α' if key == 'alpha' else 'β'} = {section[key]:g}",
                    (layers[-1], section[key]),
                    textcoords="offset points",
                    xytext=(4, 2),
                    fontsize=7,
                    ha="right",
                )
        axis.set_xlabel("decoder layer")
        axis.set_ylabel("γ (attention on vision)")
        axis.set_title(f"{name}: vision attention per layer, mean over items; band: heads' 10-90 %", fontsize=9)
        axis.set_xticks(layers)
        axis.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def retention_figure(data: dict[str, Any]) -> Any:
    """Retention and kept vision tokens per KV head, per layer, one bar per policy (mean over items)."""
    names = list(data["retention"])
    fig, axes = _figure(7.5, 5.5, 2)
    layers = list(range(data["num_layers"]))
    width = 0.8 / max(len(names), 1)
    for index, name in enumerate(names):
        section = data["retention"][name]
        xs = [x - 0.4 + width * (index + 0.5) for x in layers]
        colour = POLICY_COLOURS[index % len(POLICY_COLOURS)]
        axes[0, 0].bar(xs, _nan(section["mean"]), width, color=colour, label=name)
        axes[1, 0].bar(xs, _nan(section["kept_mean"]), width, color=colour, label=name)
    axes[1, 0].axhline(data["mean_vision_tokens"], ls="--", color="black", lw=0.8)
    axes[1, 0].annotate(
        "vision tokens",
        (layers[-1], data["mean_vision_tokens"]),
        fontsize=7,
        ha="right",
        textcoords="offset points",
        xytext=(0, 2),
    )
    axes[0, 0].set_ylabel("retention")
    axes[0, 0].set_ylim(0, 1.05)
    axes[1, 0].set_ylabel("kept vision tokens / KV head")
    axes[1, 0].set_xlabel("decoder layer")
    axes[0, 0].set_title("retention per layer (mean over items)", fontsize=9)
    axes[1, 0].set_title("vision tokens each KV head keeps (mean over items)", fontsize=9)
    for axis in axes[:, 0]:
        axis.set_xticks(layers)
        axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def recall_figure(data: dict[str, Any]) -> Any:
    """Attention recall as a layer × query-head heatmap, one panel per policy that pruned."""
    names = [name for name, section in data["recall"].items() if section is not None]
    fig, axes = _figure(3.6 * max(len(names), 1), 4.2, 1, max(len(names), 1))
    if not names:
        axes[0, 0].text(0.5, 0.5, "no recall measured", ha="center", va="center")
        axes[0, 0].set_axis_off()
        return fig
    values = [v for name in names for row in data["recall"][name]["layer_head"] for v in _nan(row)]
    low = min((v for v in values if not math.isnan(v)), default=0.0)
    for column, name in enumerate(names):
        axis = axes[0, column]
        table = [_nan(row) for row in data["recall"][name]["layer_head"]]
        image = axis.imshow(table, aspect="auto", cmap="viridis", vmin=min(low, 0.999), vmax=1.0)
        axis.set_xlabel("query head")
        axis.set_ylabel("decoder layer")
        overall = [v for row in table for v in row if not math.isnan(v)]
        mean = sum(overall) / len(overall) if overall else math.nan
        axis.set_title(f"{name}: attention recall (mean {mean:.3f})", fontsize=9)
        fig.colorbar(image, ax=axis, fraction=0.05)
    fig.tight_layout()
    return fig


def diversity_figure(data: dict[str, Any]) -> Any:
    """Jaccard overlap of keep-sets: between a layer's KV heads per layer (and between policies), and the
    heads × heads matrices of the chosen layers for the first policy."""
    section = data["head_diversity"]
    first = next(iter(section["within"]))
    matrices = section["matrices"].get(first, {})
    fig, axes = _figure(4.5 + 2.6 * len(matrices), 3.6, 1, 1 + len(matrices))
    axis = axes[0, 0]
    layers = list(range(data["num_layers"]))
    for index, (name, values) in enumerate(section["within"].items()):
        axis.plot(
            layers,
            _nan(values),
            "o-",
            ms=3,
            color=POLICY_COLOURS[index % len(POLICY_COLOURS)],
            label=f"{name}: between its heads",
        )
    for pair, values in section["between"].items():
        axis.plot(layers, _nan(values), "s--", ms=3, color="black", lw=0.8, label=f"{pair} (same head)")
    axis.set_ylim(0, 1.05)
    axis.set_xticks(layers)
    axis.set_xlabel("decoder layer")
    axis.set_ylabel("Jaccard overlap of keep-sets")
    axis.set_title("head diversity (pruned layers, mean over items)", fontsize=9)
    axis.legend(fontsize=7)
    for column, (layer, matrix) in enumerate(matrices.items(), start=1):
        axis = axes[0, column]
        image = axis.imshow(_nan_table(matrix), vmin=0, vmax=1, cmap="magma")
        axis.set_title(f"{first}, layer {layer}: KV heads", fontsize=9)
        axis.set_xlabel("KV head")
        axis.set_ylabel("KV head")
        heads = list(range(len(matrix)))
        axis.set_xticks(heads)
        axis.set_yticks(heads)
        for i in heads:
            for j in heads:
                axis.text(j, i, f"{matrix[i][j]:.2f}", ha="center", va="center", fontsize=6, color="grey")
        fig.colorbar(image, ax=axis, fraction=0.05)
    fig.tight_layout()
    return fig


def _nan_table(rows: list[list[Any]]) -> list[list[float]]:
    return [_nan(row) for row in rows]
