"""The prefill stage of a `Session`: vision tokens leave the hidden states from `start_layer` on.

A forward pre-hook on each decoder layer from `start_layer` on runs `_before_layer`: where the
layer's retention falls, the selector ranks the tokens still present by the previous layer's
statistics (`_drop_tokens`), the hidden states of the kept ones move into a shorter sequence
(`plphp.backends.prefill.TokenSequence`), and the layer gets their RoPE positions (through the
adapter) and a mask for that sequence. Later layers' caches hold only kept tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from plphp.backends.cache import PrunableLayer
from plphp.backends.keepsets import layer_nbytes, whole_layer_report
from plphp.backends.prefill import TokenSequence, gather_slots
from plphp.contract import check_keep_indices, check_shared_keep
from plphp.errors import PlphpError
from plphp.ops import budget_per_sample, keep_positions, scatter_mask
from plphp.report import LayerReport, PruningReport
from plphp.stats import LayerStats


@dataclass
class DropState:
    """Where a prefill-stage prefill stands: the sequence the next layer sees and what left it."""

    sequence: TokenSequence
    rate: torch.Tensor  # [B] share of each sample's vision tokens still present
    retention: torch.Tensor | None = None  # [num_layers, B], non-increasing from start_layer on
    first_layer: int | None = None  # the first layer that saw a shrunk sequence
    source: torch.Tensor | None = None  # [B, S] old slot of each new slot, until the hidden states move
    inputs: dict[str, Any] | None = None  # the layer inputs rebuilt for the current sequence
    present: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, L] present positions
    rates: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B] share present


class PrefillStageMixin:
    """The prefill-stage half of `Session` (which supplies `policy`, `adapter`, `materialize`,
    `_prefill`, `record_scores` and `_empty_report`)."""

    def _before_layer(self, layer_idx: int, module, args, kwargs):
        """Pre-hook of decoder layer `layer_idx` (prefill stage): drop tokens, shrink the inputs."""
        prefill = self._prefill
        if prefill is None or prefill.drop is None:
            return None
        drop = prefill.drop
        if drop.retention is None:
            drop.retention = self._prefill_retention(prefill)
        target = drop.retention[layer_idx]
        if bool((target < drop.rate).any()):
            self._drop_tokens(prefill, layer_idx, target)
        if drop.first_layer is None:
            return None
        if drop.inputs is None:
            inputs = {"attention_mask": drop.sequence.attention_mask()}
            if self.materialize == "prune":
                inputs.update(self.adapter.gather_positions(kwargs, drop.sequence.index))
            drop.inputs = inputs
        kwargs = {**kwargs, **drop.inputs}
        if drop.source is not None:  # the layer where tokens leave: move the hidden states
            if args:
                args = (gather_slots(args[0], drop.source, 1), *args[1:])
            else:
                kwargs["hidden_states"] = gather_slots(kwargs["hidden_states"], drop.source, 1)
            drop.source = None
        valid = drop.sequence.valid
        cache_layer = PrunableLayer(prompt_valid=None if bool(valid.all()) else valid)
        cache_layer.compressed = True  # its length is its own: decoding attends with its own mask
        prefill.cache.layers[layer_idx] = cache_layer
        drop.present[layer_idx] = drop.sequence.present
        drop.rates[layer_idx] = drop.rate
        return args, kwargs

    def _prefill_retention(self, prefill: Any) -> torch.Tensor:
        """`[num_layers, B]` from the allocator, which sees the layers before `start_layer` only;
        non-increasing, because dropped tokens never come back."""
        prompt = prefill.prompt
        nan = torch.full((prompt.batch_size,), float("nan"), device=prompt.vision_mask.device)
        unseen = LayerStats(scores=torch.zeros(0), vision_attention=nan)
        stats = []
        for idx in range(prompt.num_layers):
            seen = prefill.stats.get(idx)
            stats.append(LayerStats(seen.scores, seen.vision_attention.to(nan.device)) if seen else unseen)
        return self.policy.retention(stats, prompt).cummin(dim=0).values

    def _drop_tokens(self, prefill: Any, layer_idx: int, target: torch.Tensor) -> None:
        """Choose, by layer `layer_idx - 1`'s statistics, the vision tokens that stay from `layer_idx` on."""
        drop, prompt = prefill.drop, prefill.prompt
        selector = self.policy.selector
        who = f"selector {selector.name!r} (layer {layer_idx})"
        ranking = prefill.stats.get(layer_idx - 1)
        if ranking is None:
            raise PlphpError(f"layer {layer_idx - 1} produced no statistics, so layer {layer_idx} cannot rank tokens")
        scores = drop.sequence.scatter_scores(ranking.scores, prompt.length)
        candidates_mask = prompt.vision_mask & drop.sequence.present
        candidates = replace(
            prompt,
            vision_mask=candidates_mask,
            segment_ids=torch.where(candidates_mask, prompt.segment_ids, -1),
        )
        # Each drop keeps target / rate of the tokens still present (per image, rounded up).
        ratio = torch.where(drop.rate > 0, target / drop.rate.clamp(min=1e-12), torch.zeros_like(target)).clamp(0, 1)
        keep = selector.select(LayerStats(scores, ranking.vision_attention), ratio, candidates, layer_idx)
        check_keep_indices(keep, candidates, budget_per_sample(ratio, candidates), who)
        check_shared_keep(keep, who, "the prefill stage needs one set for all heads")
        text = prompt.key_valid & ~prompt.vision_mask
        present = text | scatter_mask(keep[:, :1], prompt.length)[:, 0]
        drop.sequence, drop.source = drop.sequence.keep(present, move=self.materialize == "prune")
        drop.rate = target.clone()
        drop.inputs = None
        if drop.first_layer is None:
            drop.first_layer = layer_idx
        sequence = drop.sequence
        prefill.current = replace(
            prompt,
            vision_mask=sequence.to_prompt(prompt.vision_mask, False),
            segment_ids=sequence.to_prompt(prompt.segment_ids, -1),
            key_valid=sequence.valid,
        )

    def _drop_report(self, prefill: Any) -> PruningReport:
        """The report of a prefill-stage prefill: what each layer held when prefill ended."""
        drop, prompt = prefill.drop, prefill.prompt
        num_vision = prompt.num_vision.tolist()
        report = self._empty_report(prompt.batch_size, prompt.length, num_vision, note="")
        nan = torch.full((prompt.batch_size,), float("nan"), device=prompt.vision_mask.device)
        for idx in range(prompt.num_layers):
            layer = prefill.cache.layers[idx]
            stats = prefill.stats.get(idx)
            gamma = stats.vision_attention if stats is not None else nan
            after = layer_nbytes(layer)
            present = drop.present.get(idx)
            if present is None:
                report.layers.append(whole_layer_report(idx, layer, torch.ones_like(nan), gamma, prompt))
                continue
            vision = present & prompt.vision_mask
            positions, slot_valid = keep_positions(vision[:, None, :])
            keep = torch.where(slot_valid, positions, -1).expand(-1, prompt.num_kv_heads, -1)
            counts = vision.sum(-1)
            # What the layer would hold unpruned: every prompt slot, at the cache's dtype.
            element = layer.keys.element_size() if layer.keys is not None else 0
            before = 2 * prompt.batch_size * prompt.num_kv_heads * prompt.length * prompt.head_dim * element
            report.layers.append(
                LayerReport(
                    layer_idx=idx,
                    pruned=True,
                    retention=drop.rates[idx],
                    budget=counts.tolist(),
                    kept=counts[:, None].expand(-1, prompt.num_kv_heads),
                    kept_positions=keep,
                    vision_attention=gamma,
                    kv_bytes_before=before,
                    kv_bytes_after=after,
                    physical_length=layer.length,
                    scores=stats.scores if self.record_scores and stats is not None else None,
                )
            )
        return report
