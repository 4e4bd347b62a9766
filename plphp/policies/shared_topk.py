"""Shared top-k selector (FastV, Chen et al. 2024, "An Image is Worth 1/2 Tokens After Layer 2",
arXiv 2403.06764).

All heads keep the same vision tokens: the top `⌈r · N_i⌉` of each image by the score averaged over
every head. One keep-set for the whole layer is what lets the prefill stage drop tokens from the
hidden states. (FastV ranks one image's tokens; with several images each keeps its share.)
"""

from __future__ import annotations

import torch

from plphp.components import Params, Selector
from plphp.ops import pad_keep_indices, segment_topk


class SharedTopK(Selector):
    """One set of top-scoring vision tokens per image, shared by all heads (scores averaged over heads)."""

    name = "shared_topk"
    per_head = False

    class Params(Params):
        pass

    def select(self, stats, retention, prompt, layer_idx) -> torch.Tensor:
        scores = stats.scores.float().mean(1, keepdim=True)  # [B, 1, L]
        rows = []
        for b in range(prompt.batch_size):
            (picked,) = segment_topk(scores[b], prompt.segments(b), float(retention[b]))
            rows.append([picked] * prompt.num_kv_heads)
        return pad_keep_indices(rows, scores.device)
