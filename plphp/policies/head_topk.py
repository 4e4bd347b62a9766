"""Per-head top-k selector (PLPHP, arXiv 2502.14504, head-level vision token pruning).

Each KV head keeps its own top `⌈r · N_i⌉` vision tokens of every image `i`, ranked by its score
(query heads of a GQA group reduced by mean or max); other heads may keep other tokens.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from plphp.components import Params, Selector
from plphp.ops import pad_keep_indices, reduce_heads, segment_topk


class HeadTopK(Selector):
    """Each KV head keeps its own top-scoring vision tokens, per image."""

    name = "head_topk"
    per_head = True

    class Params(Params):
        gqa_reduce: Literal["mean", "max"] = Field(
            "mean", description="how the query heads of a GQA group combine into one KV-head score"
        )

    def select(self, stats, retention, prompt, layer_idx) -> torch.Tensor:
        scores = reduce_heads(stats.scores, prompt.num_kv_heads, self.params.gqa_reduce)
        rows = [segment_topk(scores[b], prompt.segments(b), float(retention[b])) for b in range(prompt.batch_size)]
        return pad_keep_indices(rows, scores.device)
