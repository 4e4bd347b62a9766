"""Random shared selector: one uniformly random `⌈r · N_i⌉` of each image's vision tokens for all heads.

The floor that pruning before the decoder must beat (UniPruneBench and VTC-Bench found random
pruning hard to beat); one keep-set for every head, so it drives the prefill and input stages.
Seeded by `seed` and the layer index (reproducible run to run).
"""

from __future__ import annotations

import torch
from pydantic import Field

from plphp.components import Params, Selector
from plphp.ops import pad_keep_indices, segment_sample


class RandomShared(Selector):
    """Uniformly random vision tokens per image, shared by all heads (seeded)."""

    name = "random_shared"
    per_head = False

    class Params(Params):
        seed: int = Field(0, ge=0, description="random seed (combined with the layer index)")

    def select(self, stats, retention, prompt, layer_idx) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.params.seed * 100_003 + layer_idx)
        rows = []
        for b in range(prompt.batch_size):
            kept = segment_sample(prompt.segments(b), float(retention[b]), generator)
            rows.append([kept] * prompt.num_kv_heads)
        return pad_keep_indices(rows, prompt.vision_mask.device)
