"""[CLS]-attention collector (FasterVLM, Zhang et al. 2024, "[CLS] Attention is All You Need for
Training-Free Visual Token Pruning", arXiv 2412.01818; VisionZip's dominant tokens, Yang et al. 2024,
arXiv 2412.04467).

A vision token's score is the attention the vision tower's [CLS] token pays to its patch at one
tower layer (default the penultimate, the layer whose output LLaVA projects); a tower without a
[CLS] token (SigLIP, the Qwen towers) scores a patch by the mean attention it receives, as VisionZip
does for them. The adapter maps patches to vision tokens (tiles, newlines, Qwen's 2x2 merge); a token
that is no patch (a row newline) gets its image's mean score, our choice.
"""

from __future__ import annotations

import torch
from pydantic import Field

from plphp.components import Params, VisionCollector
from plphp.stats import LayerStats


class ClsAttention(VisionCollector):
    """The vision tower's [CLS] attention (or mean received attention) per vision token."""

    name = "cls_attention"

    class Params(Params):
        layer: int = Field(-2, description="vision tower layer whose attention scores (negative: from the end)")

    @property
    def tower_layer(self) -> int:
        return self.params.layer

    def collect_vision(self, vision, prompt) -> LayerStats:
        tower = vision.tower_attention.float()  # [B, L], NaN off patches
        scores = torch.zeros_like(tower)
        for b in range(prompt.batch_size):
            for segment in prompt.segments(b):
                values = tower[b, segment]
                patch = ~torch.isnan(values)
                fill = values[patch].mean() if bool(patch.any()) else values.new_zeros(())
                scores[b, segment] = torch.where(patch, values, fill)
        batch = prompt.batch_size
        rows = scores[:, None, :].expand(-1, prompt.num_kv_heads, -1)
        nan = torch.full((batch,), float("nan"), device=scores.device)
        return LayerStats(scores=rows, vision_attention=nan, features=vision.features)
