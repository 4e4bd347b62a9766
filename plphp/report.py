"""What a pruning session did, per layer: budgets, kept tokens, statistics and KV bytes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def kv_entry_bytes(head_dim: int, element_size: int) -> int:
    """Bytes of one key + value entry (one sample, one KV head, one position): `2 · D · size`."""
    return 2 * head_dim * element_size


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
        stage: "decode", "prefill" or "input".
        batch_size: rows of the batch (after beam / return-sequence expansion).
        prompt_length: padded prompt length.
        num_vision: `[B]` vision tokens per sample.
        layers: one `LayerReport` per decoder layer (empty when nothing was pruned).
        note: why nothing was pruned, when that is the case.
        input_positions: input stage: `[B, S]` the prompt position of each slot of the sequence that
            entered the decoder (-1 at padding); None for the other stages.
        merge_assignment: input stage with a merger: `[B, L]` the output position each prompt token
            folded into (-1: text, padding or discarded; `plphp.components.Merger`).
    """

    policy: str
    stage: str
    batch_size: int
    prompt_length: int
    num_vision: list[int]
    layers: list[LayerReport] = field(default_factory=list)
    note: str = ""
    input_positions: torch.Tensor | None = field(default=None, repr=False)
    merge_assignment: torch.Tensor | None = field(default=None, repr=False)

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

    # -- KV bytes from the kept counts alone ---------------------------------------------------------
    def entry_bytes(self, layer: LayerReport) -> int:
        """Bytes of one key + value entry of `layer` (one sample, one KV head, one position): `2 · D · size`,
        from its bytes before compression (every prompt slot of every sample and KV head)."""
        return layer.kv_bytes_before // (self.batch_size * layer.kept.shape[1] * self.prompt_length)

    def kv_slots(self, layer: LayerReport, text_tokens: Sequence[int] | None = None) -> int:
        """Slots per KV head that `layer`'s cache needs: the longest (sample, KV head) row's text + kept
        vision when it is pruned (with head-adaptive budgets the layer is padded to its largest head),
        else the prompt length.

        Args:
            text_tokens: per sample, its text tokens (padding excluded); default the prompt length less
                its vision tokens (an unpadded batch).
        """
        if not layer.pruned:
            return self.prompt_length
        if text_tokens is None:
            text_tokens = [self.prompt_length - n for n in self.num_vision]
        kept = layer.kept.amax(-1).tolist()  # the largest head of each sample
        return max(int(t) + k for t, k in zip(text_tokens, kept))

    def layer_kv_bytes_formula(
        self, layer: LayerReport, text_tokens: Sequence[int] | None = None, entry_bytes: int | None = None
    ) -> int:
        """`layer`'s KV bytes after compression from the kept counts: `2 · B · H_kv · slots · D · size`.

        Args:
            text_tokens: as in `kv_slots`.
            entry_bytes: `2 · D · size` when known from elsewhere (the model), else `entry_bytes(layer)`.
        """
        if entry_bytes is None:
            entry_bytes = self.entry_bytes(layer)
        return entry_bytes * self.batch_size * layer.kept.shape[1] * self.kv_slots(layer, text_tokens)

    def kv_bytes_formula(self, text_tokens: Sequence[int] | None = None) -> int | None:
        """KV bytes after compression from the kept counts alone, over all layers (`layer_kv_bytes_formula`);
        None when the report has no layers. It equals `kv_bytes_after` when the cache holds exactly
        every text token plus the kept vision tokens, padded to the longest row."""
        if not self.layers:
            return None
        return sum(self.layer_kv_bytes_formula(layer, text_tokens) for layer in self.layers if layer.kv_bytes_before)

    def kv_bytes_per_sample(self, lengths: Sequence[int]) -> tuple[list[int], list[int], list[float]]:
        """Per sample, its own prompt KV bytes (no padding) before and after pruning, from the kept counts,
        and the share of its vision KV entries kept (mean over layers).

        Args:
            lengths: per sample, its valid (unpadded) prompt tokens.

        Before is `entry · H_kv · length`, after `entry · (H_kv · text + Σ_heads kept)` per layer.
        """
        batch = len(lengths)
        if not self.layers:
            return [0] * batch, [0] * batch, [1.0] * batch
        before, after, kept_vision = [0.0] * batch, [0.0] * batch, [0.0] * batch
        for layer in self.layers:
            heads = layer.kept.shape[1]
            entry = self.entry_bytes(layer)
            for b in range(batch):
                text = lengths[b] - self.num_vision[b]
                kept = float(layer.kept[b].sum())
                before[b] += entry * heads * lengths[b]
                after[b] += entry * (heads * text + kept)
                kept_vision[b] += kept / (heads * self.num_vision[b]) if self.num_vision[b] else 1.0
        layers = len(self.layers)
        return [round(x) for x in before], [round(x) for x in after], [k / layers for k in kept_vision]

    @property
    def decoder_tokens(self) -> list[int] | None:
        """Input stage: per sample, the prompt tokens that entered the decoder (text + kept vision)."""
        if self.input_positions is None:
            return None
        return (self.input_positions >= 0).sum(-1).tolist()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (per-layer figures, no tensors of positions)."""
        return {
            **({"decoder_tokens": self.decoder_tokens} if self.input_positions is not None else {}),
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
        """A rich `Table`, one row per layer (wrapped in a narrow terminal, a block per layer in a very narrow one)."""
        from plphp.tables import FitTable

        table = FitTable(title=f"plphp report: {self.policy}", caption=self._caption(), name_blocks=True)
        for column in ("layer", "γ (vision attention)", "retention", "kept / vision", "KV before", "KV after"):
            table.add_column(column, justify="right", min_width=9 if column.startswith("KV") else None)
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
        entered = ""
        if self.decoder_tokens is not None:
            entered = (
                f"; entered the decoder: {', '.join(map(str, self.decoder_tokens))} of {self.prompt_length} tokens"
            )
        return (
            f"vision KV removed: {self.vision_kv_reduction:.1%}; prompt KV {_bytes(self.kv_bytes_before)} -> "
            f"{_bytes(self.kv_bytes_after)} ({self.kv_reduction:.1%} less)" + entered
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
