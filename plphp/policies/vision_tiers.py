"""Vision-attention tiers allocator (PLPHP, arXiv 2502.14504, layer-level retention allocation).

A layer whose vision attention `γ_l` reaches `alpha` is vision-attentive and keeps `r + Δr` of its
vision tokens; one below `beta` is vision-indifferent and keeps `r − Δr`; the rest keep `r`.
It reads `γ`, so it declares `needs_vision_attention = True`: a collector that does not measure
it (`key_norm`) is refused when the policy is loaded.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from plphp.components import Allocator, Params


class VisionTiers(Allocator):
    """Three retention tiers chosen by each layer's vision attention γ (per sample)."""

    name = "vision_tiers"
    needs_vision_attention = True

    class Params(Params):
        alpha: float = Field(0.3, ge=0.0, le=1.0, description="γ at or above: vision-attentive layer")
        beta: float = Field(0.1, ge=0.0, le=1.0, description="γ below: vision-indifferent layer")
        retention: float = Field(0.3, ge=0.0, le=1.0, description="r: retention of balanced layers")
        delta: float = Field(0.1, ge=0.0, le=1.0, description="Δr: added for attentive, removed for indifferent")

        @model_validator(mode="after")
        def _check(self):
            if self.beta > self.alpha:
                raise ValueError(f"beta ({self.beta}) must not exceed alpha ({self.alpha})")
            if self.retention - self.delta < 0 or self.retention + self.delta > 1:
                raise ValueError(
                    f"need 0 <= retention - delta <= retention + delta <= 1, got retention={self.retention}, "
                    f"delta={self.delta}"
                )
            return self

    def allocate(self, stats, prompt) -> torch.Tensor:
        p = self.params
        gamma = torch.stack([s.vision_attention.float() for s in stats])  # [num_layers, B]
        rates = torch.full_like(gamma, p.retention)
        rates = torch.where(gamma >= p.alpha, p.retention + p.delta, rates)
        return torch.where(gamma < p.beta, p.retention - p.delta, rates)
