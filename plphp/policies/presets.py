"""Built-in presets: named compositions with defaults. Any field can be overridden."""

from __future__ import annotations

from plphp.policy import Preset

PLPHP = Preset(
    name="plphp",
    description="PLPHP: vision-attention tiers per layer, per-head top-k per image, decode stage",
    reference="Meng et al. 2025, PLPHP: Per-Layer Per-Head Vision Token Pruning (arXiv 2502.14504)",
    config={
        "stage": "decode",
        "start_layer": 2,
        "collector": {"name": "last_token", "window": 1},
        "allocator": {"name": "vision_tiers", "alpha": 0.3, "beta": 0.1, "retention": 0.3, "delta": 0.1},
        "selector": {"name": "head_topk", "gqa_reduce": "mean"},
    },
)

FULL = Preset(
    name="full",
    description="keeps every token: the unpruned baseline, bit-identical to plain generate()",
    config={
        "stage": "decode",
        "start_layer": 0,
        "collector": {"name": "last_token"},
        "allocator": {"name": "uniform", "retention": 1.0},
        "selector": {"name": "head_topk"},
    },
)

RANDOM = Preset(
    name="random",
    description="random vision tokens per head and image at PLPHP's mean budget: the floor to beat",
    config={
        "stage": "decode",
        "start_layer": 2,
        "collector": {"name": "last_token"},
        "allocator": {"name": "uniform", "retention": 0.3},
        "selector": {"name": "random", "seed": 0},
    },
)

PRESETS = [PLPHP, FULL, RANDOM]
