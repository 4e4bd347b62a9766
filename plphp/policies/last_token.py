"""Last-token attention collector (PLPHP, FastV).

Scores every key by the attention it gets from the observation window: the last `window` prompt
tokens (default 1, the last token, as in PLPHP arXiv 2502.14504 and FastV arXiv 2403.06764), and
measures the vision attention mass `γ_l`. Costs one `window × L` product per head, never `L × L`.
"""

from __future__ import annotations

import torch
from pydantic import Field

from plphp.components import Collector, Params
from plphp.stats import LayerStats, PromptInfo


def window_attention(
    query: torch.Tensor, key: torch.Tensor, key_valid: torch.Tensor, window: int, scaling: float
) -> torch.Tensor:
    """Softmax attention of the last `window` queries over all keys, with the causal and padding mask.

    Args:
        query: `[B, H, L, D]`; key: `[B, H_kv, L, D]`; key_valid: `[B, L]` bool.

    Returns:
        `[B, H, w, L]` attention probabilities (float32), `w = min(window, L)`.
    """
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    w = min(window, length)
    q = query[:, :, -w:, :].float().reshape(batch, kv_heads, (heads // kv_heads) * w, dim)
    logits = (q @ key.float().transpose(-1, -2)) * scaling  # [B, H_kv, G*w, L]
    logits = logits.reshape(batch, heads, w, length)
    query_pos = torch.arange(length - w, length, device=query.device)
    visible = key_valid[:, None, None, :] & (torch.arange(length, device=query.device) <= query_pos[:, None])
    return torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0)


class LastTokenAttention(Collector):
    """Attention from the last `window` prompt tokens, averaged over the window."""

    name = "last_token"

    class Params(Params):
        window: int = Field(1, ge=1, le=4096, description="observation window: last prompt tokens that vote")

    def collect(self, query, key, prompt: PromptInfo, layer_idx: int, scaling: float) -> LayerStats:
        probs = window_attention(query, key, prompt.key_valid, self.params.window, scaling)
        voters = prompt.key_valid[:, -probs.shape[2] :].sum(-1).clamp(min=1)  # padding does not vote
        scores = probs.sum(2) / voters[:, None, None]  # [B, H, L]
        vision_mass = (scores * prompt.vision_mask[:, None, :]).sum(-1)  # [B, H]
        return LayerStats(scores=scores, vision_attention=vision_mass.mean(1))
