"""The prefill stage (FastV, PyramidDrop, VTW): vision tokens leave the hidden states from `start_layer` on.

A forward pre-hook on each decoder layer from `start_layer` on calls `PrefillStage.before_layer`:
where the layer's retention falls, the selector ranks the tokens still present by the previous
layer's statistics, the hidden states of the kept ones move into a shorter sequence
(`plphp.backends.prefill.TokenSequence`), and the layer gets their RoPE positions (through the
adapter) and a mask for that sequence. Later layers' caches hold only kept tokens. See
docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from plphp.backends.cache import PrunableLayer
from plphp.backends.prefill import TokenSequence, gather_slots, restore_logits
from plphp.backends.reporting import PrefillState, empty_report, layer_report
from plphp.contract import check_keep_indices, check_shared_keep
from plphp.errors import PlphpError
from plphp.ops import budget_per_sample, keep_positions, scatter_mask
from plphp.policy import Policy
from plphp.report import PruningReport
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


class PrefillStage:
    """Drops vision tokens from the hidden states during prefill; the session owns one per policy.

    Args:
        policy: the policy (its stage is "prefill"; its selector keeps one set for all heads).
        adapter: the model's adapter (RoPE positions of a shrunk sequence).
        materialize: "prune" moves the kept tokens into a shorter sequence; "mask" keeps every slot
            and masks the dropped ones (the reference).
        record_scores: keep the ranking statistics of each layer in the report.
    """

    def __init__(self, policy: Policy, adapter: Any, materialize: str, record_scores: bool):
        self.policy = policy
        self.adapter = adapter
        self.materialize = materialize
        self.record_scores = record_scores
        self.drop: DropState | None = None

    def start(self, state: PrefillState) -> None:
        """A new prefill: every token present."""
        key_valid = state.prompt.key_valid
        rate = torch.ones(key_valid.shape[0], device=key_valid.device)
        self.drop = DropState(sequence=TokenSequence.whole(key_valid), rate=rate)

    def shrunk(self, layer_idx: int) -> bool:
        """Whether `layer_idx` sees a shrunk sequence (its attention then needs a dense mask)."""
        drop = self.drop
        return drop is not None and drop.first_layer is not None and layer_idx >= drop.first_layer

    def before_layer(self, state: PrefillState, layer_idx: int, args: tuple, kwargs: dict) -> tuple | None:
        """Pre-hook of decoder layer `layer_idx`: drop tokens where retention falls, shrink the inputs."""
        drop = self.drop
        if drop.retention is None:
            # The allocator sees the layers before start_layer only; dropped tokens never come back.
            drop.retention = self.policy.retention(state.stats_per_layer(), state.prompt).cummin(dim=0).values
        target = drop.retention[layer_idx]
        if bool((target < drop.rate).any()):
            self._drop_tokens(state, layer_idx, target)
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
        state.cache.layers[layer_idx] = cache_layer
        drop.present[layer_idx] = drop.sequence.present
        drop.rates[layer_idx] = drop.rate
        return args, kwargs

    def _drop_tokens(self, state: PrefillState, layer_idx: int, target: torch.Tensor) -> None:
        """Choose, by layer `layer_idx - 1`'s statistics, the vision tokens that stay from `layer_idx` on."""
        drop, prompt = self.drop, state.prompt
        selector = self.policy.selector
        who = f"selector {selector.name!r} (layer {layer_idx})"
        ranking = state.stats.get(layer_idx - 1)
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
        state.current = replace(
            prompt,
            vision_mask=sequence.to_prompt(prompt.vision_mask, False),
            segment_ids=sequence.to_prompt(prompt.segment_ids, -1),
            key_valid=sequence.valid,
        )

    def restore_positions(self, output: Any, state: PrefillState) -> Any:
        """Give a full forward's per-position logits back their prompt positions.

        After tokens left, the last layer holds only the kept ones, so the model returns logits
        `[B, S, V]` for the shrunk sequence. They are put back at their prompt positions, `[B, L, V]`;
        positions whose token left (and padding) get NaN: their logits do not exist. `generate()`
        asks for the last position only, which always stays, so it sees no change.
        """
        drop = self.drop
        if drop is None or drop.first_layer is None:
            return output
        return restore_logits(output, drop.sequence, state.prompt.length)

    def report(self, state: PrefillState) -> PruningReport:
        """The report of the prefill: what each layer held when it ended."""
        drop, prompt = self.drop, state.prompt
        self.drop = None
        report = empty_report(self.policy, prompt.batch_size, prompt.length, prompt.num_vision.tolist())
        stats = state.stats_per_layer()
        for idx in range(prompt.num_layers):
            layer = state.cache.layers[idx]
            seen = state.stats.get(idx)
            gamma = seen.vision_attention if seen is not None else stats[idx].vision_attention
            present = drop.present.get(idx)
            if present is None:
                report.layers.append(
                    layer_report(idx, layer, prompt, torch.ones_like(stats[idx].vision_attention), gamma)
                )
                continue
            vision = present & prompt.vision_mask
            positions, slot_valid = keep_positions(vision[:, None, :])
            keep = torch.where(slot_valid, positions, -1).expand(-1, prompt.num_kv_heads, -1)
            # What the layer would hold unpruned: every prompt slot, at the cache's dtype.
            element = layer.keys.element_size() if layer.keys is not None else 0
            before = 2 * prompt.batch_size * prompt.num_kv_heads * prompt.length * prompt.head_dim * element
            scores = seen.scores if self.record_scores and seen is not None else None
            report.layers.append(
                layer_report(idx, layer, prompt, drop.rates[idx], gamma, keep, kv_bytes_before=before, scores=scores)
            )
        return report
