"""Pyramid allocator (PyramidKV, Cai et al. 2024, "PyramidKV: Dynamic KV Cache Compression based on
Pyramidal Information Funneling", arXiv 2406.02069).

Lower layers attend broadly and keep more, higher layers focus and keep less: retention falls
linearly from `r · (1 + spread)` at the first pruned layer to `r · (1 − spread)` at the last, so
the mean over the pruned layers stays `r`, the same budget as a uniform allocation.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from plphp.components import Allocator, Params


class Pyramid(Allocator):
    """Retention decreasing linearly with depth, mean `retention` over the pruned layers."""

    name = "pyramid"

    class Params(Params):
        retention: float = Field(0.3, ge=0.0, le=1.0, description="mean retention over the pruned layers")
        spread: float = Field(0.5, ge=0.0, le=1.0, description="first layer keeps r·(1+spread), last r·(1-spread)")

        @model_validator(mode="after")
        def _fits(self):
            if self.retention * (1 + self.spread) > 1 + 1e-9:
                raise ValueError(
                    f"retention * (1 + spread) must not exceed 1, got {self.retention} * (1 + {self.spread})"
                )
            return self

    def allocate(self, stats, prompt) -> torch.Tensor:
        r, spread = self.params.retention, self.params.spread
        pruned = prompt.pruned_layers
        rates = torch.full((prompt.num_layers,), r, device=prompt.vision_mask.device)
        if len(pruned) > 1:
            slope = torch.linspace(1.0, -1.0, len(pruned), device=rates.device)
            rates[pruned.start : pruned.stop] = (r * (1 + spread * slope)).clamp(0.0, 1.0)
        return rates[:, None].expand(-1, prompt.batch_size).contiguous()
