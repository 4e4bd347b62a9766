"""The picture of one layer's keep-sets: which patches of each image every KV head kept.

One function draws it for `plphp inspect` and `plphp demo`, on any architecture: the adapter says
where each vision token lies on the picture (`ModelAdapter.image_layouts`); kept patches are shown
at full brightness and dropped ones dimmed, one panel per KV head and per tile of each image (the
base image and the any-resolution tiles of LLaVA-NeXT / OneVision, Qwen's merged patches); tokens
that are no patch (row newlines) are counted in the panel's title; an image whose layout is
unknown is drawn as a strip of tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plphp.backends.layout import TileGrid, TokenLayout
from plphp.report import PruningReport


def kept_sets(report: PruningReport, layer: int, sample: int, positions: list[int]) -> list[set[int]]:
    """Per KV head, the prompt positions of `positions` that `report` keeps at `layer`."""
    layer_report = report.layers[layer]
    heads = layer_report.kept.shape[1]
    if layer_report.kept_positions is None:
        return [set(positions) for _ in range(heads)]
    return [{int(p) for p in row if p >= 0} for row in layer_report.kept_positions[sample]]


def layout_data(layout: TokenLayout) -> dict[str, Any]:
    """A JSON-ready layout: tiles and, per token, its `[tile, row, col]` or None."""
    return {
        "on_picture": layout.on_picture,
        "tiles": [{"rows": t.rows, "cols": t.cols, "box": list(t.box), "name": t.name} for t in layout.tiles],
        "cells": [None if cell is None else list(cell) for cell in layout.cells],
    }


def layout_from_data(data: dict[str, Any]) -> TokenLayout:
    """The inverse of `layout_data`."""
    tiles = tuple(TileGrid(t["rows"], t["cols"], tuple(t["box"]), t["name"]) for t in data["tiles"])
    cells = tuple(None if cell is None else tuple(cell) for cell in data["cells"])
    return TokenLayout(tiles, cells, data["on_picture"])


def patch_panels(
    report: PruningReport, layouts: list[list[tuple[list[int], TokenLayout]]], layer: int
) -> list[dict[str, Any]]:
    """Per sample and image: its positions, layout and each KV head's kept positions (JSON-ready)."""
    out = []
    for sample, images in enumerate(layouts):
        for index, (positions, layout) in enumerate(images):
            kept = kept_sets(report, layer, sample, positions)
            out.append(
                {
                    "sample": sample,
                    "image": index,
                    "positions": positions,
                    "layout": layout_data(layout),
                    "kept": [sorted(p for p in head if p in set(positions)) for head in kept],
                }
            )
    return out


def draw_kept_patches(panels: list[dict[str, Any]], pictures: list[list[Any]], title: str) -> Any:
    """A matplotlib `Figure`: one row per KV head, one column per (image, tile).

    Args:
        panels: from `patch_panels`.
        pictures: per sample, its PIL images (the panels' `sample` / `image` index them).
        title: the figure's title.
    """
    import numpy as np
    from matplotlib.figure import Figure

    columns = []
    for panel in panels:
        layout = layout_from_data(panel["layout"])
        for tile_index in range(len(layout.tiles)):
            columns.append((panel, layout, tile_index))
    heads = max((len(panel["kept"]) for panel in panels), default=1)
    fig = Figure(figsize=(2.2 * max(len(columns), 2), 2.3 * heads + 0.6))
    axes = fig.subplots(heads, max(len(columns), 1), squeeze=False)
    for column, (panel, layout, tile_index) in enumerate(columns):
        picture = np.asarray(pictures[panel["sample"]][panel["image"]].convert("RGB"), dtype=np.float32) / 255.0
        tile = layout.tiles[tile_index]
        tokens = [t for t, cell in enumerate(layout.cells) if cell is not None and cell[0] == tile_index]
        others = [t for t, cell in enumerate(layout.cells) if cell is None]
        for head in range(heads):
            axis = axes[head, column]
            kept = set(panel["kept"][head]) if head < len(panel["kept"]) else set()
            flags = [panel["positions"][t] in kept for t in tokens]
            label = f"Q{panel['sample'] + 1} image {panel['image'] + 1}"
            label += f" {tile.name}" if len(layout.tiles) > 1 else ""
            label += f", head {head}: {sum(flags)}/{len(tokens)}"
            if others and tile_index == len(layout.tiles) - 1:
                label += f" (+{sum(panel['positions'][t] in kept for t in others)}/{len(others)} non-patch)"
            if layout.on_picture:
                shade = np.zeros(picture.shape[:2], dtype=np.float32)
                height, width = picture.shape[:2]
                for token, keep in zip(tokens, flags):
                    top, left, bottom, right = layout.cell_box(token)
                    rows = slice(round(top * height), max(round(bottom * height), round(top * height) + 1))
                    cols = slice(round(left * width), max(round(right * width), round(left * width) + 1))
                    shade[rows, cols] = 1.0 if keep else 0.0
                axis.imshow(picture * (0.2 + 0.8 * shade[:, :, None]))
            else:
                axis.imshow(np.array([flags], dtype=np.float32), cmap="Greens", vmin=0, vmax=1, aspect="auto")
            axis.set_title(label, fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def kept_patches_figure(
    report: PruningReport,
    inputs: Any,
    images: list[list[Any]],
    layer: int,
    path: str | Path,
    adapter: Any,
    title: str = "",
) -> Path:
    """Write a PNG of one layer's keep-sets: one row per KV head, one column per image (and tile) of
    the batch; dropped patches dimmed.

    Args:
        report: the pruned run's report.
        inputs: the processor's batch (input ids, and the geometry inputs: `image_sizes`, `image_grid_thw`).
        images: the pictures of each sample, in batch order.
        layer: the decoder layer to show.
        path: where to write.
        adapter: the model's adapter (vision positions, images, `image_layouts`).
        title: first line of the figure's title (default: the policy's description).
    """
    panels = patch_panels(report, adapter.image_layouts(inputs), layer)
    heading = f"{title or report.policy}\nlayer {layer}: vision tokens kept per KV head (dropped patches dimmed)"
    fig = draw_kept_patches(panels, images, heading)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
