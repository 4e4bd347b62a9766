"""Head-adaptive top-k selector (AdaKV, Feng et al. 2024, "Ada-KV: Optimizing KV Cache Eviction by
Adaptive Budget Allocation for Efficient LLM Inference", arXiv 2407.11550).

A layer's budget is shared by its heads instead of split evenly: per image, every KV head first
keeps its top `⌊safeguard · k⌋` tokens, then the rest of the layer's `H_kv · k` slots go to the
highest-scoring (head, token) pairs of any head. Heads that concentrate their attention give slots to
heads that spread it. Heads keep different counts; the cache pads each layer to its largest head.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from plphp.components import Params, Selector
from plphp.ops import kept_count, pad_keep_indices, reduce_heads


def adaptive_topk(scores: torch.Tensor, k: int, safeguard: float) -> list[torch.Tensor]:
    """Share `H · k` slots over heads by score, each head keeping at least `⌊safeguard · k⌋`.

    Args:
        scores: `[H, n]` one image's scores per head; k: the per-head budget (`k ≤ n`).

    Returns:
        Per head, the chosen column indices (unsorted).
    """
    heads, n = scores.shape
    floor = math.floor(safeguard * k)
    chosen = torch.zeros(heads, n, dtype=torch.bool, device=scores.device)
    if floor:
        chosen.scatter_(1, scores.topk(floor, dim=-1).indices, True)
    rest = heads * k - heads * floor
    if rest:
        free = scores.float().masked_fill(chosen, float("-inf")).flatten()
        chosen.view(-1)[free.topk(rest).indices] = True
    return [torch.nonzero(row).flatten() for row in chosen]


class AdaptiveTopK(Selector):
    """Per image, the layer's budget goes to the best (head, token) pairs, with a per-head floor."""

    name = "adaptive_topk"
    per_head = True
    head_budgets = True

    class Params(Params):
        safeguard: float = Field(0.2, ge=0.0, le=1.0, description="share of the even budget every head keeps")
        gqa_reduce: Literal["mean", "max"] = Field("mean", description="how a GQA group's query heads combine")

    def select(self, stats, retention, prompt, layer_idx) -> torch.Tensor:
        scores = reduce_heads(stats.scores, prompt.num_kv_heads, self.params.gqa_reduce)  # [B, H_kv, L]
        empty = torch.empty(0, dtype=torch.long, device=scores.device)
        rows = []
        for b in range(prompt.batch_size):
            heads = [[] for _ in range(prompt.num_kv_heads)]
            for segment in prompt.segments(b):
                k = kept_count(float(retention[b]), len(segment))
                for h, cols in enumerate(adaptive_topk(scores[b][:, segment], k, self.params.safeguard)):
                    heads[h].append(segment[cols])
            rows.append([torch.cat(picked) if picked else empty for picked in heads])
        return pad_keep_indices(rows, scores.device)
