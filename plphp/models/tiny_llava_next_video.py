"""Tiny LLaVA-NeXT-Video (`LlavaNextVideoForConditionalGeneration`): LLaVA-NeXT's images plus videos.

Images are the tiny LLaVA-NeXT's (32×32 any-resolution tiles of 8×8 patches, CLIP tower, Llama
language model, `plphp.models.tiny`). A video is a stack of 32×32 frames; each frame's 4×4 patch
features are average-pooled 2×2 (`spatial_pool_stride`) into 4 tokens of `<video>`, frame after
frame. transformers' processor needs a video processor (torchvision), so the processor here is
its subclass without one, and video inputs are hand-built (`plphp.models.video`).
"""

from __future__ import annotations

from typing import Any

from transformers import (
    GenerationConfig,
    LlavaNextImageProcessorPil,
    LlavaNextVideoConfig,
    LlavaNextVideoProcessor,
    ProcessorMixin,
)

from plphp.models.common import _CLIP_MEAN, _CLIP_STD, _GRID_PINPOINTS, _PATCH_SIZE, _TILE_SIZE
from plphp.models.tokenizer import _CHAT_TEMPLATES, _build_tokenizer

ARCHITECTURES = ("llava_next_video",)
_POOL_STRIDE = 2


class TinyLlavaNextVideoProcessor(LlavaNextVideoProcessor):
    """`LlavaNextVideoProcessor` without the video sub-processor (which needs torchvision)."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        patch_size=None,
        vision_feature_select_strategy=None,
        video_token="<video>",
        image_token="<image>",
        num_additional_image_tokens=0,
        **kwargs,
    ):
        # The parent hands its sub-processors on by position, video processor first, so it is skipped:
        # these are its attributes, then the mixin's own set-up with the two sub-processors there are.
        self.patch_size = patch_size
        self.num_additional_image_tokens = num_additional_image_tokens
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_token, self.video_token = image_token, video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


PROCESSOR_CLASSES = (TinyLlavaNextVideoProcessor,)


def build_config(
    arch: str, *, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, **overrides: Any
) -> LlavaNextVideoConfig:
    """The tiny LLaVA-NeXT's config as a LLaVA-NeXT-Video config, with a `<video>` token and 2×2 pooling."""
    from plphp.models.tiny import _token_ids, build_tiny_config

    top = {k: v for k, v in overrides.items() if "__" not in k}
    nested = {k: v for k, v in overrides.items() if "__" in k}
    sizes = dict(num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads, num_kv_heads=num_kv_heads)
    base = build_tiny_config("llava_next", **sizes, **nested)
    tokenizer = _build_tokenizer("llava_next")
    kwargs = {
        "text_config": base.text_config,
        "vision_config": base.vision_config,
        "image_token_index": _token_ids("llava_next")["image_token_id"],
        "video_token_index": tokenizer.convert_tokens_to_ids("<video>"),
        "image_grid_pinpoints": _GRID_PINPOINTS,
        "image_seq_length": (_TILE_SIZE // _PATCH_SIZE) ** 2,
        "video_seq_length": (_TILE_SIZE // _PATCH_SIZE // _POOL_STRIDE) ** 2,
        "spatial_pool_stride": _POOL_STRIDE,
        "spatial_pool_mode": "average",
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
    }
    return LlavaNextVideoConfig(**(kwargs | top))


def build_processor(arch: str) -> TinyLlavaNextVideoProcessor:
    """LLaVA-NeXT's image processor and the tiny tokenizer in LLaVA-NeXT-Video's processor."""
    images = LlavaNextImageProcessorPil(
        size={"shortest_edge": _TILE_SIZE},
        crop_size={"height": _TILE_SIZE, "width": _TILE_SIZE},
        image_grid_pinpoints=_GRID_PINPOINTS,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    return TinyLlavaNextVideoProcessor(
        image_processor=images,
        tokenizer=_build_tokenizer("llava_next"),
        chat_template=_CHAT_TEMPLATES["llava_next"],
        patch_size=_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def generation_config(arch: str) -> GenerationConfig:
    from plphp.models.tiny import _generation_config

    return _generation_config("llava_next")
