"""Gemma 3: interleaved sliding-window and global layers, bidirectional attention within images.

- Vision tokens: `<image_soft_token>` only (`image_token_id`); the begin / end-of-image markers
  around each image are text. Every image has `mm_tokens_per_image` tokens (a pooled square).
- Sliding-window layers are never pruned: their cache (`DynamicSlidingWindowLayer`) keeps only the
  last `sliding_window - 1` keys, so a keep-set over prompt positions does not map onto it, and it
  stays exactly the unpruned one. Global (full-attention) layers are pruned.
- In prefill an image's tokens attend to each other bidirectionally (`token_type_ids`, passed by
  `generate()` on the first step only). The decode stage leaves prefill exact, so this stays as it
  is. The prefill stage is refused: it gives each layer from `start_layer` on a causal mask over the
  shrunk sequence, which would lose the bidirectional blocks.
- Softcapping: Gemma 3's attention module hands no `softcap` to the attention function (and
  `Gemma3ForConditionalGeneration` applies no final-logit softcap), so the collector's scores are
  the softmax the model computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from plphp.backends.adapters import ModelAdapter
from plphp.backends.layout import TokenLayout


class Gemma3Adapter(ModelAdapter):
    """Gemma 3 (`Gemma3ForConditionalGeneration`): global layers pruned, sliding ones kept whole."""

    name = "gemma3"
    architectures = ("Gemma3ForConditionalGeneration", "Gemma3Model")
    vision_token_attributes = ("image_token_id",)

    def tokens_per_image(self) -> int | None:
        """`mm_tokens_per_image`: the vision tower's patches average-pooled to a fixed square."""
        return int(self.config.mm_tokens_per_image)

    def unprunable_layers(self, stage: str) -> dict[int, str]:
        """The sliding-window layers (the base class's); in prefill, every layer: each attends
        bidirectionally within an image, which the prefill stage's causal mask would not keep."""
        out = super().unprunable_layers(stage)
        if stage in ("prefill", "input"):
            for idx in range(self.num_layers):
                out.setdefault(idx, "attends bidirectionally within each image in prefill (token_type_ids)")
        return out

    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """A square of pooled patches over the picture, resized to the tower's square input."""
        side = math.isqrt(int(self.config.mm_tokens_per_image))
        return TokenLayout.grid(side, side)


ADAPTERS = [Gemma3Adapter]
