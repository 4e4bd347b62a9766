"""Key-norm collector (Devoto et al. 2024, "A Simple and Effective L2 Norm-Based Strategy for KV
Cache Compression", arXiv 2406.11430).

Keys with a small L2 norm draw high attention, so a key's score is minus its norm, per KV head. It
needs no queries and no softmax, the cheapest collector; it does not measure the vision attention
`γ` (reported as NaN, and declared by `measures_vision_attention = False`), so it pairs with an
allocator that does not read it (uniform, pyramid); one that does (`vision_tiers`) is refused.
"""

from __future__ import annotations

import torch

from plphp.components import Collector, Params
from plphp.stats import LayerStats


class KeyNorm(Collector):
    """Minus the L2 norm of each key, per KV head (no queries needed)."""

    name = "key_norm"
    measures_vision_attention = False

    class Params(Params):
        pass

    def collect(self, query, key, prompt, layer_idx, scaling) -> LayerStats:
        scores = -key.float().norm(dim=-1)  # [B, H_kv, L]
        nan = torch.full((key.shape[0],), float("nan"), device=key.device)
        return LayerStats(scores=scores, vision_attention=nan)
