"""Tiny random-weight vision-language models of real transformers architectures.

Everything here is built offline from configs: no weights, tokenizers or processors are
downloaded. Each model is a real transformers class (LLaVA, LLaVA-NeXT, LLaVA-OneVision,
Qwen2-VL, Qwen2.5-VL) with a few decoder layers, grouped-query attention (4 query heads, 2 KV
heads, head_dim 16), a two-layer vision tower and a vocabulary of a few hundred tokens.
The processors are the architectures' own processors around a small byte-level BPE tokenizer
trained in code on a built-in corpus, with a chat template.

They are meant for tests, demos and benchmarks of vision-token pruning: their outputs are
meaningless, but their shapes, caches, position ids and vision-token layouts are those of the
real models, and they generate fast on a CPU. The language model's weights are drawn with a
larger standard deviation (0.2) than transformers' default so that attention is not uniform and
greedy decoding is not stuck on one token.

Vision tokens per image (64x64 / 128x96 / 96x128 pixels, width x height, one image in the sample):
LLaVA 36 / 36 / 36 (fixed 48x48 crop), LLaVA-NeXT and LLaVA-OneVision 88 / 70 / 72 (any-res
tiling over 32x32 tiles; in a OneVision sample with several images every image has 17), Qwen2-VL
and Qwen2.5-VL 16 / 48 / 48 (one token per 16x16 pixels, between 4 and 100).

Example:
    >>> from plphp.backends import tiny
    >>> model = tiny.build_tiny_model("qwen2_vl")
    >>> processor = tiny.build_tiny_processor("qwen2_vl")
    >>> inputs = tiny.make_inputs(processor, [("What is shown?", [tiny.make_image(64, 96)])])
    >>> out = model.generate(**inputs, max_new_tokens=5)

Note:
    transformers' Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision processors need a video processor,
    which needs torchvision. plphp does not depend on torchvision, so for these three
    architectures the processor is a subclass of the real one without the video sub-processor
    (``TinyQwen2VLProcessor``, ``TinyQwen2_5_VLProcessor``, ``TinyLlavaOnevisionProcessor``);
    image processing, placeholder expansion and tokenization are the real classes' code. The
    subclasses are registered with ``AutoProcessor`` when this module is imported, so
    ``AutoProcessor.from_pretrained`` loads a directory written by :func:`save_tiny` in any
    process that has imported ``plphp.backends.tiny``. The saved ``processor_config.json`` also
    has an ``auto_map`` to a one-line module re-exporting the class, so that a process that never
    imported plphp is asked for ``trust_remote_code=True`` (and then loads it) instead of silently
    getting the tokenizer alone, which is what transformers returns when it cannot find the class.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections import Counter
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image, ImageDraw
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaImageProcessorPil,
    LlavaNextConfig,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
    SiglipVisionConfig,
)

from plphp.backends.loading import chat_inputs

__all__ = [
    "ARCHITECTURES",
    "TinyLlavaOnevisionProcessor",
    "TinyQwen2VLProcessor",
    "TinyQwen2_5_VLProcessor",
    "build_tiny_config",
    "build_tiny_model",
    "build_tiny_processor",
    "make_image",
    "make_inputs",
    "save_tiny",
]

ARCHITECTURES: tuple[str, ...] = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl")

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

# -- tokenizer ------------------------------------------------------------------------------------
_CORPUS = """\
The image shows a red square on a blue background.
A small green circle is next to a large yellow rectangle.
What is shown in the picture? Describe the image in detail.
There are two cats and one dog sitting on the grass.
How many objects are in the image? Answer with a number.
The photo was taken outside on a sunny day near the river.
Compare the first image with the second image.
Which color is the largest shape? The largest shape is blue.
A person is reading a book at a wooden table in the kitchen.
The chart shows the number of visitors per month in the park.
Is there a car in the image? Yes, there is a white car.
The text on the sign says open from nine to five.
Left, right, top and bottom: where is the orange triangle?
The answer is yes. The answer is no. I do not know.
Describe the scene, the colors, the shapes and the people.
"""
_NUM_MERGES = 120

_LLAVA_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>")
_ONEVISION_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
_QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Chat templates: each accepts content given as a string or as a list of {"type": "image"} /
# {"type": "video"} / {"type": "text", "text": ...} items.
_VICUNA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'video' %}<video>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ ' ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ image_placeholder }}"
    "{% elif item['type'] == 'video' %}{{ video_placeholder }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _chatml_template(image_placeholder: str, video_placeholder: str) -> str:
    return (
        "{% set image_placeholder = '" + image_placeholder + "' %}"
        "{% set video_placeholder = '" + video_placeholder + "' %}" + _CHATML_TEMPLATE
    )


_CHAT_TEMPLATES = {
    "llava": _VICUNA_TEMPLATE,
    "llava_next": _VICUNA_TEMPLATE,
    "llava_onevision": _chatml_template("<image>\\n", "<video>\\n"),
    "qwen2_vl": _chatml_template(
        "<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>"
    ),
    "qwen2_5_vl": _chatml_template(
        "<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>"
    ),
}


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {ARCHITECTURES}")


def _special_tokens(arch: str) -> tuple[str, ...]:
    if arch in _QWEN_FAMILY:
        return _QWEN_SPECIALS
    if arch == "llava_onevision":
        return _ONEVISION_SPECIALS
    return _LLAVA_SPECIALS


def _train_bpe_merges(corpus: str, num_merges: int) -> list[tuple[str, str]]:
    """Learns byte-level BPE merges on `corpus`, deterministically (ties break lexicographically)."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = Counter(piece for line in corpus.splitlines() for piece, _ in pre.pre_tokenize_str(line + "\n"))
    splits = {word: list(word) for word in words}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            symbols = splits[word]
            for pair in pairwise(symbols):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        for word, symbols in splits.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            splits[word] = out
    return merges


@lru_cache(maxsize=1)
def _bpe_vocabulary() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    merges = _train_bpe_merges(_CORPUS, _NUM_MERGES)
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    return tuple(tokens), tuple(merges)


def _build_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    specials = _special_tokens(arch)
    base_tokens, merges = _bpe_vocabulary()
    vocab = {tok: i for i, tok in enumerate(specials)}
    for tok in base_tokens:
        vocab[tok] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in specials])

    if arch in _QWEN_FAMILY or arch == "llava_onevision":
        names = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"}
    else:
        names = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    extra = [tok for tok in specials if tok not in names.values()]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        padding_side="left",
        chat_template=_CHAT_TEMPLATES[arch],
        model_max_length=4096,
        extra_special_tokens=extra,
        **names,
    )
    return tokenizer


# -- processors -----------------------------------------------------------------------------------
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
for _cls in _TINY_PROCESSORS:
    # Registered under a private key (not a config class), so that AutoProcessor finds the class
    # by the name saved in processor_config.json without changing what real checkpoints load.
    AutoProcessor.register(f"plphp_tiny_{_cls.__name__}", _cls, exist_ok=True)


def build_tiny_processor(arch: str) -> transformers.ProcessorMixin:
    """Builds the processor of a tiny model: the architecture's image processor and a tiny tokenizer.

    Args:
        arch: One of :data:`ARCHITECTURES`.

    Returns:
        A processor whose tokenizer pads on the left and has a chat template, with image
        geometry matching :func:`build_tiny_config` (default patch sizes).
    """
    _check_arch(arch)
    tokenizer = _build_tokenizer(arch)
    template = _CHAT_TEMPLATES[arch]
    common = {"image_mean": _CLIP_MEAN, "image_std": _CLIP_STD}
    if arch == "llava":
        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": _LLAVA_IMAGE_SIZE},
            crop_size={"height": _LLAVA_IMAGE_SIZE, "width": _LLAVA_IMAGE_SIZE},
            **common,
        )
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=_PATCH_SIZE,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=template,
        )
    if arch == "llava_next":
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": _TILE_SIZE},
            crop_size={"height": _TILE_SIZE, "width": _TILE_SIZE},
            image_grid_pinpoints=_GRID_PINPOINTS,
            **common,
        )
        return LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=_PATCH_SIZE,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=template,
        )
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


# -- configs and models ---------------------------------------------------------------------------
def _token_ids(arch: str) -> dict[str, int]:
    specials = _special_tokens(arch)
    ids = {tok: i for i, tok in enumerate(specials)}
    vocab_size = len(specials) + len(_bpe_vocabulary()[0])
    out = {"vocab_size": vocab_size}
    if arch in _QWEN_FAMILY:
        out |= {
            "image_token_id": ids["<|image_pad|>"],
            "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"],
            "vision_end_token_id": ids["<|vision_end|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "bos_token_id": ids["<|endoftext|>"],
        }
    elif arch == "llava_onevision":
        out |= {
            "image_token_id": ids["<image>"],
            "video_token_id": ids["<video>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "bos_token_id": ids["<|endoftext|>"],
        }
    else:
        out |= {
            "image_token_id": ids["<image>"],
            "eos_token_id": ids["</s>"],
            "pad_token_id": ids["<pad>"],
            "bos_token_id": ids["<s>"],
        }
    return out


def _mrope_section(head_dim: int) -> list[int]:
    """Splits the rotary half-dimension into temporal / height / width sections like Qwen2-VL (1:1.5:1.5)."""
    spatial = (head_dim // 2) * 3 // 8
    return [head_dim // 2 - 2 * spatial, spatial, spatial]


def build_tiny_config(
    arch: str,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    **overrides: Any,
) -> transformers.PreTrainedConfig:
    """Builds the config of a tiny model of a real architecture.

    Args:
        arch: One of :data:`ARCHITECTURES`.
        num_layers: Decoder layers of the language model.
        hidden_size: Hidden size of the language model; head_dim is `hidden_size // num_heads`.
        num_heads: Query heads per decoder layer.
        num_kv_heads: Key/value heads per decoder layer (grouped-query attention).
        **overrides: Extra config arguments. A plain name goes to the top-level config
            (e.g. `vision_feature_layer=-1`); `text_config__name` and `vision_config__name` go to
            the language model's and the vision tower's configs (e.g.
            `text_config__initializer_range=0.02`). Overrides of the image geometry (patch or
            image size) are not mirrored in :func:`build_tiny_processor`.

    Returns:
        The architecture's config, with token ids matching :func:`build_tiny_processor`.

    Raises:
        ValueError: For an unknown `arch` or heads that do not divide `hidden_size`.
    """
    _check_arch(arch)
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError("hidden_size must be divisible by num_heads, and num_heads by num_kv_heads")
    text_over: dict[str, Any] = {}
    vision_over: dict[str, Any] = {}
    top_over: dict[str, Any] = {}
    for key, value in overrides.items():
        if key.startswith("text_config__"):
            text_over[key.removeprefix("text_config__")] = value
        elif key.startswith("vision_config__"):
            vision_over[key.removeprefix("vision_config__")] = value
        else:
            top_over[key] = value

    ids = _token_ids(arch)
    head_dim = hidden_size // num_heads
    text: dict[str, Any] = {
        "vocab_size": ids["vocab_size"],
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 4096,
        "initializer_range": _TEXT_INIT_STD,
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
        "tie_word_embeddings": False,
    }
    # CLIP / SigLIP towers: 2 layers, hidden 32, 8x8 patches.
    vision: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": _PATCH_SIZE,
    }
    if arch == "llava":
        kwargs: dict[str, Any] = {
            "text_config": LlamaConfig(**(text | {"head_dim": head_dim} | text_over)),
            "vision_config": CLIPVisionConfig(
                **(vision | {"image_size": _LLAVA_IMAGE_SIZE, "projection_dim": 32} | vision_over)
            ),
            "image_token_index": ids["image_token_id"],
            "image_seq_length": (_LLAVA_IMAGE_SIZE // _PATCH_SIZE) ** 2,
            "vision_feature_select_strategy": "default",
            "vision_feature_layer": -2,
        }
        return LlavaConfig(**(kwargs | top_over))
    if arch == "llava_next":
        kwargs = {
            "text_config": LlamaConfig(**(text | {"head_dim": head_dim} | text_over)),
            "vision_config": CLIPVisionConfig(
                **(vision | {"image_size": _TILE_SIZE, "projection_dim": 32} | vision_over)
            ),
            "image_token_index": ids["image_token_id"],
            "image_grid_pinpoints": _GRID_PINPOINTS,
            "image_seq_length": (_TILE_SIZE // _PATCH_SIZE) ** 2,
            "vision_feature_select_strategy": "default",
            "vision_feature_layer": -2,
        }
        return LlavaNextConfig(**(kwargs | top_over))
    if arch == "llava_onevision":
        kwargs = {
            "text_config": Qwen2Config(**(text | text_over)),
            "vision_config": SiglipVisionConfig(**(vision | {"image_size": _TILE_SIZE} | vision_over)),
            "image_token_index": ids["image_token_id"],
            "video_token_index": ids["video_token_id"],
            "image_grid_pinpoints": _GRID_PINPOINTS,
            "vision_feature_select_strategy": "full",
            "vision_feature_layer": -1,
            "vision_aspect_ratio": "anyres_max_9",
        }
        return LlavaOnevisionConfig(**(kwargs | top_over))

    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": _mrope_section(head_dim),
    }
    kwargs = {
        "text_config": text | text_over,
        "image_token_id": ids["image_token_id"],
        "video_token_id": ids["video_token_id"],
        "vision_start_token_id": ids["vision_start_token_id"],
        "vision_end_token_id": ids["vision_end_token_id"],
    }
    # Qwen towers: 2 blocks, width 32, 8x8 patches merged 2x2 into one token of `hidden_size`.
    qwen_vision = {
        "depth": 2,
        "num_heads": 2,
        "patch_size": _PATCH_SIZE,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if arch == "qwen2_vl":
        qwen_vision |= {"embed_dim": 32, "mlp_ratio": 2, "hidden_size": hidden_size}
        return Qwen2VLConfig(**(kwargs | {"vision_config": qwen_vision | vision_over} | top_over))
    qwen_vision |= {
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": hidden_size,
        # 32-pixel windows = 2x2 merged tokens; block 0 attends within windows, block 1 globally.
        "window_size": 4 * _PATCH_SIZE,
        "fullatt_block_indexes": [1],
    }
    return Qwen2_5_VLConfig(**(kwargs | {"vision_config": qwen_vision | vision_over} | top_over))


def _generation_config(arch: str) -> GenerationConfig:
    ids = _token_ids(arch)
    eos: int | list[int] = ids["eos_token_id"]
    if arch in _QWEN_FAMILY or arch == "llava_onevision":
        eos = [ids["eos_token_id"], ids["pad_token_id"]]  # <|im_end|>, <|endoftext|> as Qwen does
    return GenerationConfig(bos_token_id=ids["bos_token_id"], eos_token_id=eos, pad_token_id=ids["pad_token_id"])


def build_tiny_model(
    arch: str,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device: str | torch.device = "cpu",
    **config_overrides: Any,
) -> transformers.PreTrainedModel:
    """Builds a tiny random-weight model of a real architecture, in eval mode.

    Args:
        arch: One of :data:`ARCHITECTURES`.
        seed: Seed of the weights; the same seed gives the same weights (the global RNG state is
            left untouched).
        dtype: Parameter dtype.
        attn_implementation: transformers attention implementation ("sdpa", "eager", ...).
        device: Device of the model.
        **config_overrides: Forwarded to :func:`build_tiny_config` (e.g. `num_layers=6`).

    Returns:
        The model (`*ForConditionalGeneration`), with a generation config whose pad / eos /
        bos token ids match the tiny tokenizer.
    """
    config = build_tiny_config(arch, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(
            config, attn_implementation=attn_implementation, dtype=torch.float32
        )
    model.generation_config = _generation_config(arch)
    return model.to(device=device, dtype=dtype).eval()


def save_tiny(arch: str, path: str | os.PathLike, *, seed: int = 0) -> pathlib.Path:
    """Saves a tiny model and its processor into a directory.

    Args:
        arch: One of :data:`ARCHITECTURES`.
        path: Directory to write (created if needed).
        seed: Seed of the weights.

    Returns:
        The directory, loadable with `AutoModelForImageTextToText.from_pretrained` and
        `AutoProcessor.from_pretrained`. For LLaVA-OneVision and the Qwen models the processor
        class is plphp's (see the module's note): import `plphp.backends.tiny` before loading,
        or pass `trust_remote_code=True`.
    """
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_tiny_model(arch, seed=seed).save_pretrained(path)
    processor = build_tiny_processor(arch)
    processor.save_pretrained(path)
    if isinstance(processor, _TINY_PROCESSORS):
        _write_processor_auto_map(path, type(processor).__name__)
    return path


_AUTO_MAP_MODULE = "processing_plphp_tiny"


def _write_processor_auto_map(path: pathlib.Path, class_name: str) -> None:
    """Points `AutoProcessor` at plphp's processor class, for processes that never imported it.

    Without this, `AutoProcessor.from_pretrained` in such a process silently returns the
    tokenizer alone; with it, it asks for `trust_remote_code=True` and then imports the class
    from plphp (the written module only re-exports it).
    """
    (path / f"{_AUTO_MAP_MODULE}.py").write_text(
        '"""Processor of a plphp tiny model: re-exported from plphp.backends.tiny."""\n\n'
        f"from plphp.backends.tiny import {class_name}\n\n__all__ = [{class_name!r}]\n"
    )
    config_file = path / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {"AutoProcessor": f"{_AUTO_MAP_MODULE}.{class_name}"}
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# -- inputs ---------------------------------------------------------------------------------------
def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Draws a deterministic RGB picture: a coloured background with a few coloured rectangles.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        seed: Seed of the colours and positions.

    Returns:
        A PIL image of mode "RGB".
    """
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


# Chat inputs are built the same way for tiny and real models.
make_inputs = chat_inputs
