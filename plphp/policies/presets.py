"""Built-in presets: named compositions with defaults. Any field can be overridden.

A preset may build on another (`"preset": "snapkv"`): it then lists only what differs from it.
"""

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

PLPHP_QUESTION = Preset(
    name="plphp-question",
    description="PLPHP scored by the question's tokens (every text token after the last image), not the last token",
    reference="Meng et al. 2025 (arXiv 2502.14504), observation window ours: see docs/grid-model.md",
    config={"preset": "plphp", "collector": {"window": "question"}},
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

FASTV = Preset(
    name="fastv",
    description="FastV: from layer K=2 the half of the vision tokens least attended by the last token leave prefill",
    reference='Chen et al. 2024, "An Image is Worth 1/2 Tokens After Layer 2" (arXiv 2403.06764)',
    config={
        "stage": "prefill",
        "start_layer": 2,
        "collector": {"name": "last_token", "window": 1},
        "allocator": {"name": "uniform", "retention": 0.5},
        "selector": {"name": "shared_topk"},
    },
)

FASTV_KV = Preset(
    name="fastv-kv",
    description="FastV's keep-set (ranked at layer K-1) applied to the KV cache of layers >= K; exact prefill",
    reference='Chen et al. 2024, "An Image is Worth 1/2 Tokens After Layer 2" (arXiv 2403.06764)',
    config={"preset": "fastv", "stage": "decode", "rank_by": "layer_before_start"},
)

VTW = Preset(
    name="vtw",
    description="VTW: every vision token leaves the hidden states after half the depth",
    reference="Lin et al. 2024, Boosting MLLMs with Visual Tokens Withdrawal for Rapid Inference (arXiv 2405.05803)",
    config={
        "stage": "prefill",
        "start_layer": 1,
        "collector": {"name": "last_token"},
        "allocator": {"name": "withdraw", "after": 0.5},
        "selector": {"name": "shared_topk"},
    },
)

PYRAMIDDROP = Preset(
    name="pyramiddrop",
    description="PyramidDrop: each quarter of the depth keeps half the vision tokens of the one before (prefill)",
    reference="Xing et al. 2024, PyramidDrop (arXiv 2410.17247)",
    config={
        "stage": "prefill",
        "start_layer": 1,
        "collector": {"name": "last_token"},
        "allocator": {"name": "pyramid_stages", "boundaries": [0.25, 0.5, 0.75], "ratio": 0.5},
        "selector": {"name": "shared_topk"},
    },
)

SNAPKV = Preset(
    name="snapkv",
    description="SnapKV: pooled attention of the last 32 prompt tokens, per-head top-k, 30% of vision KV",
    reference="Li et al. 2024, SnapKV (arXiv 2404.14469)",
    config={
        "stage": "decode",
        "start_layer": 0,
        "collector": {"name": "snapkv", "window": 32, "kernel": 7, "pooling": "max"},
        "allocator": {"name": "uniform", "retention": 0.3},
        "selector": {"name": "head_topk"},
    },
)

PYRAMIDKV = Preset(
    name="pyramidkv",
    description="PyramidKV: SnapKV scores with budgets falling linearly with depth (mean 30%)",
    reference="Cai et al. 2024, PyramidKV (arXiv 2406.02069)",
    config={"preset": "snapkv", "allocator": {"name": "pyramid", "retention": 0.3, "spread": 0.5}},
)

ADAKV = Preset(
    name="adakv",
    description="AdaKV: SnapKV scores, each layer's budget shared across heads by score (30% of vision KV)",
    reference="Feng et al. 2024, Ada-KV (arXiv 2407.11550)",
    config={"preset": "snapkv", "selector": {"name": "adaptive_topk", "safeguard": 0.2}},
)

KNORM = Preset(
    name="knorm",
    description="Key norm: keep the vision keys with the smallest L2 norm per head (30%), no attention needed",
    reference="Devoto et al. 2024, A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression "
    "(arXiv 2406.11430)",
    config={
        "stage": "decode",
        "start_layer": 0,
        "collector": {"name": "key_norm"},
        "allocator": {"name": "uniform", "retention": 0.3},
        "selector": {"name": "head_topk"},
    },
)

DART = Preset(
    name="dart",
    description="DART: from layer K=2 only the 22.2% of vision tokens that least duplicate key-norm pivots stay",
    reference='Wen et al. 2025, "Stop Looking for Important Tokens in Multimodal Language Models: Duplication '
    'Matters More" (arXiv 2502.11494)',
    config={
        "stage": "prefill",
        "start_layer": 2,
        "collector": {
            "name": "duplication",
            "pivots": 4,
            "text_pivots": 4,
            "key_norm": "l1",
            "similarity": "hidden_states",
        },
        "allocator": {"name": "uniform", "retention": 0.222},
        "selector": {"name": "shared_topk"},
    },
)

#: The input-stage presets keep 64 of LLaVA-1.5's 576 vision tokens per image (VisionZip's and
#: FasterVLM's headline budget), except `pool`, whose 2x2 blocks keep a quarter.
INPUT_RETENTION = 64 / 576

VISIONZIP = Preset(
    name="visionzip",
    description="VisionZip: 54 dominant tokens by [CLS] attention + 10 contextual tokens merging the rest, before the decoder",
    reference="Yang et al. 2024, VisionZip: Longer is Better but Not Necessary in Vision Language Models (arXiv 2412.04467)",
    config={
        "stage": "input",
        "collector": {"name": "cls_attention", "layer": -2},
        "allocator": {"name": "uniform", "retention": INPUT_RETENTION},
        "selector": {"name": "shared_topk"},
        "merger": {"name": "contextual", "share": 10 / 64},
    },
)

FASTERVLM = Preset(
    name="fastervlm",
    description="FasterVLM: the vision tokens the tower's [CLS] attends to most enter the decoder (64 of 576)",
    reference="Zhang et al. 2024, [CLS] Attention is All You Need for Training-Free Visual Token Pruning "
    "(arXiv 2412.01818)",
    config={
        "stage": "input",
        "collector": {"name": "cls_attention", "layer": -2},
        "allocator": {"name": "uniform", "retention": INPUT_RETENTION},
        "selector": {"name": "shared_topk"},
    },
)

DIVPRUNE = Preset(
    name="divprune",
    description="DivPrune: a max-min diverse set of vision tokens (cosine distance of the features) enters the decoder",
    reference="Alvar et al. 2025, DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models "
    "(arXiv 2503.02175)",
    config={
        "stage": "input",
        "collector": {"name": "features"},
        "allocator": {"name": "uniform", "retention": INPUT_RETENTION},
        "selector": {"name": "diversity"},
    },
)

POOL = Preset(
    name="pool",
    description="2x2 average pooling of each image's patch grid before the decoder (a quarter of the tokens)",
    config={
        "stage": "input",
        "collector": {"name": "features"},
        "allocator": {"name": "uniform", "retention": 1.0},
        "selector": {"name": "shared_topk"},
        "merger": {"name": "pool", "stride": 2},
    },
)

RANDOM_INPUT = Preset(
    name="random-input",
    description="random vision tokens per image (64 of 576) enter the decoder: the input stage's floor",
    config={
        "stage": "input",
        "collector": {"name": "features"},
        "allocator": {"name": "uniform", "retention": INPUT_RETENTION},
        "selector": {"name": "random_shared", "seed": 0},
    },
)

PRESETS = [
    PLPHP,
    PLPHP_QUESTION,
    FULL,
    RANDOM,
    FASTV,
    FASTV_KV,
    VTW,
    PYRAMIDDROP,
    SNAPKV,
    PYRAMIDKV,
    ADAKV,
    KNORM,
    DART,
]
PRESETS += [VISIONZIP, FASTERVLM, DIVPRUNE, POOL, RANDOM_INPUT]
