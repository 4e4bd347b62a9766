"""Duplication collector (DART: Wen et al. 2025, "Stop Looking for Important Tokens in Multimodal
Language Models: Duplication Matters More", arXiv 2502.11494).

Ranks vision tokens by how little they duplicate a few pivot tokens, with no attention scores. Per
image the pivots are its `pivots` vision tokens with the largest key norm (L1 over all KV heads'
post-RoPE keys), plus the sample's `text_pivots` question tokens (text after the last image) with
the largest key norm. Every pivot lists the image's other tokens from least to most cosine-similar
on the layer's output hidden states after the final norm (`similarity: keys`, our variant, compares
the post-RoPE keys). A token's rank is the first round in which some pivot lists it: round `m`
gives each pivot, in turn, its `m`-th least similar token. Image pivots rank first. With the
`shared_topk` selector an image keeping `p + m · P` tokens keeps its `p` image pivots and the `m`
least similar tokens of each of its `P` pivots (text pivots choose too, and stay as text).
See docs/policies/dart.md.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from plphp.components import Collector, Params
from plphp.ops import observers
from plphp.stats import LayerStats, PromptInfo


def strongest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` largest `values` `[n]`, largest first (ties: the earlier index)."""
    return torch.sort(values, descending=True, stable=True).indices[:count]


def duplication_scores(
    features: torch.Tensor, image_pivots: torch.Tensor, text_pivots: torch.Tensor, segment: torch.Tensor
) -> torch.Tensor:
    """One image's scores: image pivots first (by key norm), then by the round a pivot lists a token in.

    Args:
        features: `[L, D]` unit-norm hidden states (or keys) of one sample.
        image_pivots: `[p]` positions of the image's pivots, strongest first (a subset of `segment`).
        text_pivots: `[t]` positions of the sample's text pivots.
        segment: `[n]` positions of the image's vision tokens.

    Returns:
        `[n]` distinct scores, higher kept first: `n·P + p - i` for the `i`-th image pivot, else
        `n·P - min_q (P · rank_q(j) + q)`, `rank_q(j)` the place of token `j` among pivot `q`'s
        least similar non-pivot tokens, `P = p + t`.
    """
    pivots = torch.cat([image_pivots, text_pivots])
    num_pivots, n = pivots.shape[0], segment.shape[0]
    similarity = features[pivots] @ features[segment].T  # [P, n] cosine
    is_pivot = torch.isin(segment, image_pivots)
    similarity[:, is_pivot] = float("inf")  # pivots are kept anyway: no pivot lists them
    order = similarity.argsort(dim=-1, stable=True)  # [P, n] least similar first
    places = torch.arange(n, device=order.device).expand(num_pivots, n)
    rank = torch.empty_like(order).scatter_(1, order, places)  # rank[q, j]: place of j in q's list
    turn = torch.arange(num_pivots, device=rank.device)[:, None]
    scores = (n * num_pivots - (rank * num_pivots + turn).amin(0)).float()
    place = (segment[:, None] == image_pivots[None, :]).long().argmax(-1)  # which pivot, for pivots
    pivot_scores = (n * num_pivots + image_pivots.shape[0] - place).float()
    return torch.where(is_pivot, pivot_scores, scores)


class Duplication(Collector):
    """DART: vision tokens ranked by how little they duplicate key-norm pivots (hidden-state cosine)."""

    name = "duplication"
    measures_vision_attention = False
    reads_hidden_states = True

    class Params(Params):
        pivots: int = Field(4, ge=1, le=256, description="image pivots per image: its tokens of largest key norm")
        text_pivots: int = Field(
            4, ge=0, le=256, description="text pivots per sample: question tokens of largest key norm (not kept)"
        )
        key_norm: Literal["l1", "l2"] = Field("l1", description="the norm of the keys that picks pivots")
        similarity: Literal["hidden_states", "keys"] = Field(
            "hidden_states", description="what the cosine compares: hidden states (DART) or post-RoPE keys"
        )

    def collect(
        self, query, key, prompt: PromptInfo, layer_idx: int, scaling: float, *, hidden_states: torch.Tensor
    ) -> LayerStats:
        batch, kv_heads, length, _ = key.shape
        flat = key.float().transpose(1, 2).reshape(batch, length, -1)  # [B, L, H_kv·D]: every head's key
        norm = flat.norm(p=1 if self.params.key_norm == "l1" else 2, dim=-1)  # [B, L]
        compared = hidden_states.float() if self.params.similarity == "hidden_states" else flat
        features = torch.nn.functional.normalize(compared, dim=-1)  # [B, L, D_model] (or [B, L, H_kv·D])
        window = observers(prompt, "question")  # [B, w] the question's tokens, or the last one
        question_mask = window & ~prompt.vision_mask[:, length - window.shape[1] :]
        scores = torch.zeros(batch, length, device=key.device)
        for b in range(batch):
            question = torch.nonzero(question_mask[b]).flatten() + (length - window.shape[1])
            text_pivots = question[strongest(norm[b, question], self.params.text_pivots)]
            for segment in prompt.segments(b):
                image_pivots = segment[strongest(norm[b, segment], self.params.pivots)]
                scores[b, segment] = duplication_scores(features[b], image_pivots, text_pivots, segment)
        nan = torch.full((batch,), float("nan"), device=key.device)
        return LayerStats(scores=scores[:, None, :].expand(-1, kv_heads, -1), vision_attention=nan)
