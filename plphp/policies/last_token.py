"""Last-token attention collector (PLPHP, FastV).

Scores every key by the attention it gets from the observation window: the last `window` prompt
tokens (default 1, the last token, as in PLPHP arXiv 2502.14504 and FastV arXiv 2403.06764), or,
with `window: question`, every text token after the last image (the question and the template's
tail). Measures the vision attention mass `γ_l`. Costs one `window × L` product per head, never `L × L`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

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


def observers(prompt: PromptInfo, window: int | str) -> torch.Tensor:
    """`[B, w]` bool: which of the last `w` prompt positions vote (padding never does).

    `window` is a count of last tokens, or "question": the text tokens after each sample's last
    vision token (the last token alone for a sample without one).
    """
    positions = torch.arange(prompt.length, device=prompt.key_valid.device)
    if window == "question":
        last_vision = torch.where(prompt.vision_mask, positions, -1).amax(-1)  # [B]
        has_vision = (last_vision >= 0)[:, None]
        voting = prompt.key_valid & (positions > last_vision[:, None]) & has_vision
        voting[:, -1] |= prompt.key_valid[:, -1]
        first = int(torch.where(voting, positions, prompt.length).amin())
        return voting[:, first:]
    width = min(int(window), prompt.length)
    return prompt.key_valid[:, prompt.length - width :]


class LastTokenAttention(Collector):
    """Attention from the observation window (the last tokens, or the question), averaged over it."""

    name = "last_token"

    class Params(Params):
        window: int | Literal["question"] = Field(
            1, description="observation window: a number of last prompt tokens (1 to 4096), or 'question'"
        )

        @field_validator("window")
        @classmethod
        def _range(cls, value):
            if isinstance(value, int) and not 1 <= value <= 4096:
                raise ValueError(f"window must be between 1 and 4096 tokens or 'question', got {value}")
            return value

    def collect(self, query, key, prompt: PromptInfo, layer_idx: int, scaling: float) -> LayerStats:
        voting = observers(prompt, self.params.window)  # [B, w]
        probs = window_attention(query, key, prompt.key_valid, voting.shape[1], scaling)
        probs = probs * voting[:, None, :, None]
        voters = voting.sum(-1).clamp(min=1)
        scores = probs.sum(2) / voters[:, None, None]  # [B, H, L]
        vision_mass = (scores * prompt.vision_mask[:, None, :]).sum(-1)  # [B, H]
        return LayerStats(scores=scores, vision_attention=vision_mass.mean(1))
