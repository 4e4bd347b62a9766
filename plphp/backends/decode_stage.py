"""The decode stage (PLPHP, the default): prefill is exact, and the KV cache is compressed once it ends.

When the prefill forward returns, the allocator turns every layer's statistics into retention
rates, the selector picks each KV head's vision tokens per layer, and each pruned layer's cache
keeps only text plus those tokens ("prune": gathered into a shorter buffer; "mask": kept in place
and masked, the reference that pruning must equal). See docs/architecture.md.
"""

from __future__ import annotations

from plphp.backends.cache import PrunableLayer
from plphp.backends.reporting import PrefillState, empty_report, layer_nbytes, layer_report
from plphp.contract import check_keep_indices
from plphp.ops import budget_per_sample, keep_positions, scatter_mask
from plphp.policy import Policy
from plphp.report import PruningReport


class DecodeStage:
    """Compresses a filled cache by the policy's keep-sets.

    Args:
        policy: the policy (its stage is "decode").
        prunable: per decoder layer, whether the adapter allows pruning it (sliding-window layers do not).
        materialize: "prune" or "mask".
        record_scores: keep the ranking statistics of each pruned layer in the report.
    """

    def __init__(self, policy: Policy, prunable: list[bool], materialize: str, record_scores: bool):
        self.policy = policy
        self.prunable = prunable
        self.materialize = materialize
        self.record_scores = record_scores

    def ranking_layer(self, layer_idx: int) -> int:
        """The layer whose statistics rank `layer_idx`'s tokens: its own, or FastV's layer K-1."""
        if self.policy.rank_by == "layer_before_start" and layer_idx >= self.policy.start_layer:
            return self.policy.start_layer - 1
        return layer_idx

    def compress(self, state: PrefillState) -> PruningReport:
        """Allocate, select and compress every layer of `state.cache`; returns the report."""
        prompt, policy = state.prompt, self.policy
        stats = state.stats_per_layer()
        retention = policy.retention(stats, prompt)
        num_vision = prompt.num_vision.tolist()
        report = empty_report(policy, prompt.batch_size, prompt.length, num_vision)
        text = ~prompt.vision_mask & prompt.key_valid
        for idx in range(prompt.num_layers):
            layer = state.cache.layers[idx]
            rates = retention[idx]
            budget = budget_per_sample(rates, prompt)
            gamma = state.stats[idx].vision_attention if idx in state.stats else stats[idx].vision_attention
            prune = (
                isinstance(layer, PrunableLayer)
                and self.prunable[idx]
                and policy.prunes_layer(idx)
                and self.ranking_layer(idx) in state.stats
                and budget != num_vision
            )
            if not prune:
                report.layers.append(layer_report(idx, layer, prompt, rates, gamma))
                continue
            before = layer_nbytes(layer)
            local = prompt.to(layer.keys.device)
            ranking = stats[self.ranking_layer(idx)]
            keep = policy.selector.select(ranking, rates.to(layer.keys.device), local, idx)
            who = f"selector {policy.selector.name!r} (layer {idx})"
            check_keep_indices(keep, local, budget, who, head_budgets=policy.selector.head_budgets)
            keep_mask = text.to(keep.device)[:, None, :].repeat(1, prompt.num_kv_heads, 1)
            keep_mask |= scatter_mask(keep, prompt.length)
            if self.materialize == "prune":
                layer.compress(*keep_positions(keep_mask))
            else:
                layer.restrict(keep_mask)
            scores = ranking.scores if self.record_scores else None
            report.layers.append(layer_report(idx, layer, prompt, rates, gamma, keep, budget, before, scores))
        return report
