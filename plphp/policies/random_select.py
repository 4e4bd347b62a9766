"""Random selector: the baseline every scoring policy must beat.

Keeps a uniformly random `⌈r · N_i⌉` of each image's vision tokens, per KV head or shared by all
heads, from a generator seeded by `seed` and the layer index (reproducible run to run).
"""

from __future__ import annotations

import torch
from pydantic import Field

from plphp.components import Params, Selector
from plphp.ops import pad_keep_indices, segment_sample


class RandomSelector(Selector):
    """Uniformly random vision tokens per image (seeded)."""

    name = "random"
    per_head = True

    class Params(Params):
        seed: int = Field(0, ge=0, description="random seed (combined with the layer index)")

    def select(self, stats, retention, prompt, layer_idx) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.params.seed * 100_003 + layer_idx)
        rows = []
        for b in range(prompt.batch_size):
            heads = []
            for _ in range(prompt.num_kv_heads):
                heads.append(segment_sample(prompt.segments(b), float(retention[b]), generator))
            rows.append(heads)
        return pad_keep_indices(rows, prompt.vision_mask.device)
