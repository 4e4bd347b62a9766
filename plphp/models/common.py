"""Names shared by the tiny-model modules: architectures, image geometry, weight scale."""

from __future__ import annotations

ARCHITECTURES: tuple[str, ...] = (
    "llava",
    "llava_next",
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_5",
    "gemma3",
    "mistral3",
    "internvl",
    "idefics3",
    "smolvlm",
    "llava_next_video",
)

_QWEN_FAMILY = ("qwen2_vl", "qwen2_5_vl")

# -- image geometry -------------------------------------------------------------------------------
# LLaVA: one 48x48 crop, 8x8 patches -> 36 vision tokens per image (CLS dropped).
_LLAVA_IMAGE_SIZE = 48
# LLaVA-NeXT / OneVision: 32x32 tiles of 8x8 patches (4x4 = 16 features per tile); any-res grids
# of up to 2x2 tiles, so an image has at most 16 (base tile) + 64 (grid) + 8 (row newlines) = 88
# vision tokens.
_TILE_SIZE = 32
_PATCH_SIZE = 8
_GRID_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]
# Qwen: 8x8 patches merged 2x2, so one vision token per 16x16 pixels, between 4 and 100 tokens.
_QWEN_MIN_PIXELS = 32 * 32
_QWEN_MAX_PIXELS = 160 * 160

# Image statistics of OpenAI CLIP, as the real checkpoints use.
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Standard deviation of the language model's random weights. transformers' default (0.02) gives a
# tiny model nearly uniform attention (every vision token scored alike) and near-constant logits;
# at 0.2 attention is peaked and differs between layers and heads, and greedy decoding varies.
_TEXT_INIT_STD = 0.2


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {ARCHITECTURES}")
