"""What both stages share once a prefill ends: the state of that prefill, the statistics of every
layer, and the one factory of `LayerReport`s (see docs/architecture.md, "Data flow")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from plphp.report import LayerReport, PruningReport
from plphp.stats import LayerStats, PromptInfo


@dataclass
class PrefillState:
    """One prefill in progress: created by the session's forward pre-hook, ended by its forward hook.

    Attributes:
        prompt: the prompt's vision positions, segments and padding.
        cache: the cache being filled (its layers are `PrunableLayer`s where pruning may act).
        stats: per decoder layer, the collector's statistics (layers it has seen so far).
        current: the prompt as the collector sees it; the prefill stage shrinks it as tokens leave.
    """

    prompt: PromptInfo
    cache: Any
    stats: dict[int, LayerStats] = field(default_factory=dict)
    current: PromptInfo | None = None

    def __post_init__(self) -> None:
        self.current = self.current or self.prompt

    def stats_per_layer(self) -> list[LayerStats]:
        """Every layer's statistics, in order; a layer the collector never saw gets NaN `γ` and no scores.

        The `γ`s are moved to the prompt's device: with `device_map="auto"` layers sit on different
        devices, and the allocator sees one.
        """
        device = self.prompt.vision_mask.device
        unseen = LayerStats(
            scores=torch.zeros(0), vision_attention=torch.full((self.prompt.batch_size,), float("nan"), device=device)
        )
        out = []
        for idx in range(self.prompt.num_layers):
            seen = self.stats.get(idx)
            out.append(LayerStats(seen.scores, seen.vision_attention.to(device)) if seen is not None else unseen)
        return out


def empty_report(policy: Any, batch: int, length: int, num_vision: list[int], note: str = "") -> PruningReport:
    """A report with no layers yet (filled by a stage), or one that says why nothing was pruned."""
    return PruningReport(
        policy=policy.describe(),
        stage=policy.stage,
        batch_size=batch,
        prompt_length=length,
        num_vision=num_vision,
        note=note,
    )


def layer_report(
    layer_idx: int,
    layer: Any,
    prompt: PromptInfo,
    retention: torch.Tensor,
    vision_attention: torch.Tensor,
    kept_positions: torch.Tensor | None = None,
    budget: list[int] | None = None,
    kv_bytes_before: int | None = None,
    scores: torch.Tensor | None = None,
) -> LayerReport:
    """The report of one layer after its stage acted; the only place a `LayerReport` is built.

    Args:
        layer_idx: the decoder layer.
        layer: its cache layer, as it is now.
        prompt: the prompt.
        retention: `[B]` the layer's retention rate per sample.
        vision_attention: `[B]` its `γ`.
        kept_positions: `[B, H_kv, k]` the kept vision positions (-1 padded); None when the layer kept
            every vision token (then it is reported as not pruned).
        budget: vision tokens each sample keeps per KV head; default: all of them, or the kept count.
        kv_bytes_before: bytes of the layer unpruned; default: its bytes now.
        scores: the statistics that ranked its tokens, when they are to be recorded.
    """
    num_vision = prompt.num_vision.tolist()
    if kept_positions is None:
        kept = torch.tensor(num_vision, device=retention.device)[:, None].expand(-1, prompt.num_kv_heads)
    else:
        kept = (kept_positions >= 0).sum(-1)
    nbytes = layer_nbytes(layer)
    keys = getattr(layer, "keys", None)
    return LayerReport(
        layer_idx=layer_idx,
        pruned=kept_positions is not None,
        retention=retention,
        budget=budget if budget is not None else (num_vision if kept_positions is None else kept[:, 0].tolist()),
        kept=kept,
        kept_positions=kept_positions,
        vision_attention=vision_attention,
        kv_bytes_before=nbytes if kv_bytes_before is None else kv_bytes_before,
        kv_bytes_after=nbytes,
        physical_length=keys.shape[-2] if keys is not None else 0,
        scores=scores,
    )


def layer_nbytes(layer: Any) -> int:
    """Bytes of a cache layer's keys and values in use (0 for an empty layer)."""
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if keys is None or values is None:
        return 0
    return keys.numel() * keys.element_size() + values.numel() * values.element_size()
