"""The tiny models' processors: the architectures' own, around the tiny tokenizer."""

from __future__ import annotations

import transformers
from transformers import (
    AutoProcessor,
    LlavaImageProcessorPil,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    LlavaProcessor,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)

from plphp.models.common import (
    _CLIP_MEAN,
    _CLIP_STD,
    _GRID_PINPOINTS,
    _LLAVA_IMAGE_SIZE,
    _PATCH_SIZE,
    _QWEN_MAX_PIXELS,
    _QWEN_MIN_PIXELS,
    _TILE_SIZE,
    _check_arch,
)
from plphp.models.families import family, processor_classes
from plphp.models.tokenizer import _CHAT_TEMPLATES, _build_tokenizer


class TinyQwen2VLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without the video sub-processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class TinyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` without the video sub-processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class TinyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
    """`LlavaOnevisionProcessor` without the video sub-processor (which needs torchvision)."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        video_token="<video>",
        vision_aspect_ratio="anyres_max_9",
        **kwargs,
    ):
        super().__init__(
            image_processor,
            tokenizer,
            None,
            num_image_tokens=num_image_tokens,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            video_token=video_token,
            vision_aspect_ratio=vision_aspect_ratio,
            **kwargs,
        )


_TINY_PROCESSORS = (TinyQwen2VLProcessor, TinyQwen2_5_VLProcessor, TinyLlavaOnevisionProcessor)


def tiny_processor_classes() -> tuple[type, ...]:
    """plphp's own processor classes: the three above and those of the families (`plphp.models.families`)."""
    return _TINY_PROCESSORS + processor_classes()


def register_processors() -> None:
    """Register plphp's processor classes with `AutoProcessor`; calling it again does nothing more.

    After this, `AutoProcessor.from_pretrained` loads a directory written by `save_tiny` in this
    process (without it, it asks for `trust_remote_code=True`, see the package's note). Call it
    before loading a saved tiny model; importing plphp registers nothing.
    """
    for cls in tiny_processor_classes():
        # Registered under a private key (not a config class), so that AutoProcessor finds the class
        # by the name saved in processor_config.json without changing what real checkpoints load.
        AutoProcessor.register(f"plphp_tiny_{cls.__name__}", cls, exist_ok=True)


def build_tiny_processor(arch: str) -> transformers.ProcessorMixin:
    """Builds the processor of a tiny model: the architecture's image processor and a tiny tokenizer.

    Args:
        arch: One of :data:`ARCHITECTURES`.

    Returns:
        A processor whose tokenizer pads on the left and has a chat template, with image
        geometry matching :func:`build_tiny_config` (default patch sizes).
    """
    _check_arch(arch)
    if (module := family(arch)) is not None:
        return module.build_processor(arch)
    tokenizer = _build_tokenizer(arch)
    template = _CHAT_TEMPLATES[arch]
    common = {"image_mean": _CLIP_MEAN, "image_std": _CLIP_STD}
    llava_family = {
        "tokenizer": tokenizer,
        "patch_size": _PATCH_SIZE,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,
        "chat_template": template,
    }
    if arch == "llava":
        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": _LLAVA_IMAGE_SIZE},
            crop_size={"height": _LLAVA_IMAGE_SIZE, "width": _LLAVA_IMAGE_SIZE},
            **common,
        )
        return LlavaProcessor(image_processor=image_processor, **llava_family)
    if arch == "llava_next":
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": _TILE_SIZE},
            crop_size={"height": _TILE_SIZE, "width": _TILE_SIZE},
            image_grid_pinpoints=_GRID_PINPOINTS,
            **common,
        )
        return LlavaNextProcessor(image_processor=image_processor, **llava_family)
    if arch == "llava_onevision":
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": _TILE_SIZE, "width": _TILE_SIZE},
            image_grid_pinpoints=_GRID_PINPOINTS,
            **common,
        )
        return TinyLlavaOnevisionProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            num_image_tokens=(_TILE_SIZE // _PATCH_SIZE) ** 2,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
            chat_template=template,
        )
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": _QWEN_MIN_PIXELS, "longest_edge": _QWEN_MAX_PIXELS},
        patch_size=_PATCH_SIZE,
        temporal_patch_size=2,
        merge_size=2,
        **common,
    )
    cls = TinyQwen2VLProcessor if arch == "qwen2_vl" else TinyQwen2_5_VLProcessor
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
