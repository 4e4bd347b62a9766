"""Tiny InternVL (`InternVLForConditionalGeneration`, InternVL 3.x): tiles plus a thumbnail per image.

The image processor (GotOcr2's, PIL backend) cuts an image into up to `_MAX_TILES` 32×32 tiles
and, when there are several, adds a 32×32 thumbnail of the whole picture. The tower (InternViT
shape, 2 layers, width 32, 4×4 patches) gives each tile 8×8 patches, and a 0.5 pixel shuffle folds
them into 4×4 = 16 tokens. The processor writes `<img>`, 16 `<IMG_CONTEXT>` per tile and thumbnail,
`</img>`; only `<IMG_CONTEXT>` tokens are vision tokens.
"""

from __future__ import annotations

from typing import Any

from transformers import GenerationConfig, GotOcr2ImageProcessorPil, InternVLConfig, InternVLProcessor, Qwen2Config

from plphp.models.common import _CLIP_MEAN, _CLIP_STD
from plphp.models.shrink import split_overrides, text_kwargs, token_id
from plphp.models.tokenizer import _chatml_template, build_tokenizer

ARCHITECTURES = ("internvl",)

_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>")
_TILE = 32
_PATCH = 4
_MAX_TILES = 6
#: Tokens per tile: (32 / 4)² patches, pixel shuffle 0.5 -> 4×4.
TOKENS_PER_TILE = (_TILE // _PATCH // 2) ** 2


class TinyInternVLProcessor(InternVLProcessor):
    """`InternVLProcessor` without the video sub-processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length=256, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template, **kwargs)


PROCESSOR_CLASSES = (TinyInternVLProcessor,)


def build_config(
    arch: str, *, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, **overrides: Any
) -> InternVLConfig:
    """The shrunk InternVL config: a Qwen2 language model and a 2-layer InternViT tower."""
    text_over, vision_over, top_over = split_overrides(overrides)
    text = text_kwargs(
        _SPECIALS,
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        bos="<|endoftext|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": _TILE,
        "patch_size": _PATCH,
    }
    return InternVLConfig(
        **{
            "text_config": Qwen2Config(**(text | text_over)),
            "vision_config": vision | vision_over,
            "image_token_id": token_id(_SPECIALS, "<IMG_CONTEXT>"),
            "image_seq_length": TOKENS_PER_TILE,
            "downsample_ratio": 0.5,
            "vision_feature_layer": -1,
            "vision_feature_select_strategy": "default",
        }
        | top_over
    )


def build_processor(arch: str) -> TinyInternVLProcessor:
    """InternVL's processor: GotOcr2's tiling image processor and the tiny tokenizer."""
    template = _chatml_template("<IMG_CONTEXT>\\n", "<video>\\n")
    tokenizer = build_tokenizer(
        _SPECIALS,
        {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"},
        template,
        {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    images = GotOcr2ImageProcessorPil(
        size={"height": _TILE, "width": _TILE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=_MAX_TILES,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    return TinyInternVLProcessor(
        image_processor=images, tokenizer=tokenizer, image_seq_length=TOKENS_PER_TILE, chat_template=template
    )


def generation_config(arch: str) -> GenerationConfig:
    pad, eos = token_id(_SPECIALS, "<|endoftext|>"), token_id(_SPECIALS, "<|im_end|>")
    return GenerationConfig(bos_token_id=pad, eos_token_id=[eos, pad], pad_token_id=pad)
