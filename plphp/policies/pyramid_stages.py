"""Stage allocator (PyramidDrop, Xing et al. 2024, "PyramidDrop: Accelerating Your Large
Vision-Language Models via Pyramid Visual Redundancy Reduction", arXiv 2410.17247).

The depth is cut into stages at `boundaries` (shares of the depth); each stage keeps `ratio` of the
vision tokens the previous one had: retention `ratio ** s` in stage `s`. The paper's LLaVA setting
is boundaries at layers 8 / 16 / 24 of 32 with ratio 0.5, the defaults here.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from plphp.components import Allocator, Params


class PyramidStages(Allocator):
    """Retention shrinks by `ratio` at each stage boundary."""

    name = "pyramid_stages"

    class Params(Params):
        boundaries: tuple[float, ...] = Field(
            (0.25, 0.5, 0.75), min_length=1, description="where stages start, as shares of the depth, increasing"
        )
        ratio: float = Field(0.5, ge=0.0, le=1.0, description="share of the previous stage's tokens a stage keeps")

        @field_validator("boundaries")
        @classmethod
        def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
            if any(not 0.0 < b < 1.0 for b in value) or list(value) != sorted(set(value)):
                raise ValueError(f"boundaries must increase strictly within (0, 1), got {list(value)}")
            return value

    def allocate(self, stats, prompt) -> torch.Tensor:
        layers = torch.arange(prompt.num_layers, device=prompt.vision_mask.device)
        starts = torch.tensor([int(b * prompt.num_layers) for b in self.params.boundaries], device=layers.device)
        stage = (layers[:, None] >= starts[None, :]).sum(-1)  # [num_layers]
        rates = torch.full_like(stage, 1, dtype=torch.float) * self.params.ratio ** stage.float()
        return rates[:, None].expand(-1, prompt.batch_size).contiguous()
