"""Last-token attention collector (PLPHP, FastV).

Scores every key by the attention it gets from the observation window: the last `window` prompt
tokens (default 1, the last token, as in PLPHP arXiv 2502.14504 and FastV arXiv 2403.06764), or,
with `window: question`, every text token after the last image (the question and the template's
tail). Measures the vision attention mass `γ_l`. Costs one `window × L` product per head, never `L × L`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from plphp.components import Collector, Params
from plphp.ops import observers, window_attention
from plphp.stats import LayerStats, PromptInfo


class LastTokenAttention(Collector):
    """Attention from the observation window (the last tokens, or the question), averaged over it."""

    name = "last_token"

    class Params(Params):
        window: Annotated[int, Field(ge=1, le=4096)] | Literal["question"] = Field(
            1, description="observation window: a number of last prompt tokens (1 to 4096), or 'question'"
        )

        @field_validator("window", mode="before")
        @classmethod
        def _range(cls, value):
            # Before the union is tried, so that a number out of range gets this message rather than
            # one error per member of the union.
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not 1 <= value <= 4096:
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
