"""Uniform allocator: every pruned layer keeps the same share of vision tokens.

The baseline of most token-pruning papers; with `retention: 1.0` it keeps everything (`full`).
"""

from __future__ import annotations

import torch
from pydantic import Field

from plphp.components import Allocator, Params


class Uniform(Allocator):
    """The same retention for every layer and sample."""

    name = "uniform"

    class Params(Params):
        retention: float = Field(0.5, ge=0.0, le=1.0, description="fraction of vision tokens kept")

    def allocate(self, stats, prompt) -> torch.Tensor:
        device = prompt.vision_mask.device
        return torch.full((prompt.num_layers, prompt.batch_size), self.params.retention, device=device)
