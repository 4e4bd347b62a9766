"""Observation-window collector with pooling (SnapKV, Li et al. 2024, "SnapKV: LLM Knows What You
are Looking for Before Generation", arXiv 2404.14469).

Scores each key by the attention of the last `window` prompt tokens (averaged), then smooths the
scores with a 1-D pooling of `kernel` positions, so a token's neighbours share its importance and
kept tokens come in clusters. Also measures the vision attention `γ` (unpooled).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from plphp.components import Collector, Params
from plphp.ops import window_attention
from plphp.stats import LayerStats


class SnapKV(Collector):
    """Attention of the last `window` prompt tokens, pooled over `kernel` neighbouring positions."""

    name = "snapkv"

    class Params(Params):
        window: int = Field(32, ge=1, le=4096, description="observation window: last prompt tokens that vote")
        kernel: int = Field(7, ge=1, le=63, description="pooling width over neighbouring positions (odd)")
        pooling: Literal["max", "avg"] = Field("max", description="how the pooling combines neighbours")

        @field_validator("kernel")
        @classmethod
        def _odd(cls, value: int) -> int:
            if value % 2 == 0:
                raise ValueError(f"kernel must be odd so the pooling stays centred, got {value}")
            return value

    def collect(self, query, key, prompt, layer_idx, scaling) -> LayerStats:
        probs = window_attention(query, key, prompt.key_valid, self.params.window, scaling)  # [B, H, w, L]
        voters = prompt.key_valid[:, -probs.shape[2] :].sum(-1).clamp(min=1)
        scores = probs.sum(2) / voters[:, None, None]  # [B, H, L]
        gamma = (scores * prompt.vision_mask[:, None, :]).sum(-1).mean(1)
        kernel, pad = self.params.kernel, self.params.kernel // 2
        if self.params.pooling == "max":
            pooled = torch.nn.functional.max_pool1d(scores, kernel, stride=1, padding=pad)
        else:
            pooled = torch.nn.functional.avg_pool1d(scores, kernel, stride=1, padding=pad, count_include_pad=False)
        return LayerStats(scores=pooled, vision_attention=gamma)
