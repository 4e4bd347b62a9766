"""Withdraw allocator (VTW, Lin et al. 2024, "Boosting Multimodal Large Language Models with Visual
Tokens Withdrawal for Rapid Inference", arXiv 2405.05803).

Every vision token stays up to a depth and leaves after it: retention 1 before layer
`⌊after · num_layers⌋`, 0 from it on. VTW picks that layer by a KL-divergence search on a few
samples; here it is a fraction of the depth (the paper's choice sits near the middle).
"""

from __future__ import annotations

import torch
from pydantic import Field

from plphp.components import Allocator, Params


class Withdraw(Allocator):
    """All vision tokens leave after a fraction of the depth."""

    name = "withdraw"

    class Params(Params):
        after: float = Field(0.5, gt=0.0, le=1.0, description="share of the depth after which vision tokens leave")

    def allocate(self, stats, prompt) -> torch.Tensor:
        layers = torch.arange(prompt.num_layers, device=prompt.vision_mask.device)
        kept = (layers < int(self.params.after * prompt.num_layers)).float()  # [num_layers]
        return kept[:, None].expand(-1, prompt.batch_size).contiguous()
