"""Features collector: hands the projected vision features to selectors and mergers that compare
tokens (DivPrune's diversity, pooling, random), with no scores of its own (all zero).

It reads no attention at all, neither the tower's nor the decoder's, so it works with any kernel.
"""

from __future__ import annotations

import torch

from plphp.components import Params, VisionCollector
from plphp.stats import LayerStats


class Features(VisionCollector):
    """The projected vision features, unscored (input stage)."""

    name = "features"

    class Params(Params):
        pass

    def collect_vision(self, vision, prompt) -> LayerStats:
        batch, length = prompt.batch_size, prompt.length
        scores = vision.features.new_zeros(batch, prompt.num_kv_heads, length, dtype=torch.float32)
        nan = torch.full((batch,), float("nan"), device=scores.device)
        return LayerStats(scores=scores, vision_attention=nan, features=vision.features)
