"""The tiny models' configs and weights, and saving them next to their processor."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import torch
import transformers
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaOnevisionConfig,
    Qwen2_5_VLConfig,
    Qwen2Config,
    Qwen2VLConfig,
    SiglipVisionConfig,
)

from plphp.models.common import (
    _GRID_PINPOINTS,
    _LLAVA_IMAGE_SIZE,
    _PATCH_SIZE,
    _QWEN_FAMILY,
    _TEXT_INIT_STD,
    _TILE_SIZE,
    _check_arch,
)
from plphp.models.families import family
from plphp.models.processors import build_tiny_processor, register_processors, tiny_processor_classes
from plphp.models.shrink import split_overrides
from plphp.models.tokenizer import _bpe_vocabulary, _special_tokens


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
    if (module := family(arch)) is not None:
        sizes = dict(num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads, num_kv_heads=num_kv_heads)
        return module.build_config(arch, **sizes, **overrides)
    text_over, vision_over, top_over = split_overrides(overrides)

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
    if (module := family(arch)) is not None:
        return module.generation_config(arch)
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
        if (module := family(arch)) is not None and hasattr(module, "initialize"):
            module.initialize(arch, model)
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
        class is plphp's (see the package's note): load it with `load_tiny`, or call
        `plphp.models.register_processors()`
        before loading, or pass `trust_remote_code=True`.
    """
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_tiny_model(arch, seed=seed).save_pretrained(path)
    processor = build_tiny_processor(arch)
    processor.save_pretrained(path)
    if isinstance(processor, tiny_processor_classes()):
        _write_processor_auto_map(path, type(processor))
    return path


def load_tiny(path: str | os.PathLike) -> tuple[Any, Any]:
    """Loads a directory written by `save_tiny`: `(model, processor)`, the model in eval mode.

    It registers plphp's processor classes first (`plphp.models.register_processors`), so no
    custom-code prompt appears; `AutoProcessor.from_pretrained` on such a directory needs that call.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    register_processors()
    processor = AutoProcessor.from_pretrained(path)
    return AutoModelForImageTextToText.from_pretrained(path).eval(), processor


_AUTO_MAP_MODULE = "processing_plphp_tiny"


def _write_processor_auto_map(path: pathlib.Path, cls: type) -> None:
    """Points `AutoProcessor` at plphp's processor class, for processes that never imported it.

    Without this, `AutoProcessor.from_pretrained` in such a process silently returns the
    tokenizer alone; with it, it asks for `trust_remote_code=True` and then imports the class
    from plphp (the written module only re-exports it).
    """
    (path / f"{_AUTO_MAP_MODULE}.py").write_text(
        '"""Processor of a plphp tiny model: re-exported from plphp.models."""\n\n'
        f"from {cls.__module__} import {cls.__name__}\n\n__all__ = [{cls.__name__!r}]\n"
    )
    config_file = path / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {"AutoProcessor": f"{_AUTO_MAP_MODULE}.{cls.__name__}"}
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
