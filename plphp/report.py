"""What a pruning session did, per layer: budgets, kept tokens, statistics and KV bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LayerReport:
    """One decoder layer after compression.

    Attributes:
        layer_idx: the decoder layer.
        pruned: whether the layer's cache was compressed.
        retention: `[B]` retention rate per sample.
        budget: vision tokens each sample keeps per KV head (`Σ_images ⌈r · N_i⌉`).
        kept: `[B, H_kv]` vision tokens actually kept per sample and KV head.
        kept_positions: `[B, H_kv, k]` kept vision positions (prompt indices), -1 padded; None when
            the layer was not pruned (every vision token kept).
        vision_attention: `[B]` the layer's `γ` from the collector.
        kv_bytes_before: bytes of the layer's prompt keys and values before compression.
        kv_bytes_after: bytes after compression (the real tensors).
        physical_length: slots per head after compression.
    """

    layer_idx: int
    pruned: bool
    retention: torch.Tensor
    budget: list[int]
    kept: torch.Tensor
    kept_positions: torch.Tensor | None
    vision_attention: torch.Tensor
    kv_bytes_before: int
    kv_bytes_after: int
    physical_length: int
    scores: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class PruningReport:
    """The report of one prefill + compression (one `generate()` call).

    Attributes:
        policy: the policy's one-line description.
        stage: "decode" or "prefill".
        batch_size: rows of the batch (after beam / return-sequence expansion).
        prompt_length: padded prompt length.
        num_vision: `[B]` vision tokens per sample.
        layers: one `LayerReport` per decoder layer (empty when nothing was pruned).
        note: why nothing was pruned, when that is the case.
    """

    policy: str
    stage: str
    batch_size: int
    prompt_length: int
    num_vision: list[int]
    layers: list[LayerReport] = field(default_factory=list)
    note: str = ""

    @property
    def kv_bytes_before(self) -> int:
        return sum(layer.kv_bytes_before for layer in self.layers)

    @property
    def kv_bytes_after(self) -> int:
        return sum(layer.kv_bytes_after for layer in self.layers)

    @property
    def vision_kept_fraction(self) -> float:
        """Kept vision (layer, head, token) entries over all of them; 1.0 when nothing was pruned."""
        total = sum(self.num_vision) * len(self.layers)
        if not self.layers or total == 0:
            return 1.0
        heads = self.layers[0].kept.shape[1]
        kept = sum(float(layer.kept.sum()) for layer in self.layers) / heads
        return kept / total

    @property
    def vision_kv_reduction(self) -> float:
        """Share of the vision tokens' KV entries removed, over all layers and heads."""
        return 1.0 - self.vision_kept_fraction

    @property
    def kv_reduction(self) -> float:
        """Share of the prompt's KV bytes removed (text and padding included)."""
        before = self.kv_bytes_before
        return 1.0 - self.kv_bytes_after / before if before else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (per-layer figures, no tensors of positions)."""
        return {
            "policy": self.policy,
            "stage": self.stage,
            "batch_size": self.batch_size,
            "prompt_length": self.prompt_length,
            "num_vision": self.num_vision,
            "note": self.note,
            "kv_bytes_before": self.kv_bytes_before,
            "kv_bytes_after": self.kv_bytes_after,
            "vision_kv_reduction": self.vision_kv_reduction,
            "layers": [
                {
                    "layer": layer.layer_idx,
                    "pruned": layer.pruned,
                    "retention": [round(float(r), 4) for r in layer.retention],
                    "budget": layer.budget,
                    "vision_attention": [round(float(g), 4) for g in layer.vision_attention],
                    "kv_bytes_before": layer.kv_bytes_before,
                    "kv_bytes_after": layer.kv_bytes_after,
                }
                for layer in self.layers
            ],
        }

    def table(self) -> Any:
        """A rich `Table`, one row per layer."""
        from rich.table import Table

        table = Table(title=f"plphp report: {self.policy}", caption=self._caption())
        for column in ("layer", "γ (vision attention)", "retention", "kept / vision", "KV bytes before", "after"):
            table.add_column(column, justify="right")
        for layer in self.layers:
            gamma = ", ".join(f"{float(g):.3f}" for g in layer.vision_attention)
            rate = ", ".join(f"{float(r):.2f}" for r in layer.retention)
            kept = ", ".join(f"{b}/{n}" for b, n in zip(layer.budget, self.num_vision))
            table.add_row(
                str(layer.layer_idx), gamma, rate, kept, _bytes(layer.kv_bytes_before), _bytes(layer.kv_bytes_after)
            )
        return table

    def _caption(self) -> str:
        if self.note:
            return self.note
        return (
            f"vision KV removed: {self.vision_kv_reduction:.1%}; prompt KV {_bytes(self.kv_bytes_before)} -> "
            f"{_bytes(self.kv_bytes_after)} ({self.kv_reduction:.1%} less)"
        )

    def summary(self) -> str:
        """One line for logs."""
        return f"{self.policy} — {self._caption()}"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
