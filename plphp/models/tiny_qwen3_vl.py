"""Tiny Qwen3-VL and Qwen3.5 models (`plphp.models.families`): Qwen2.5-VL's images and tokens, plus
DeepStack (Qwen3-VL) or a hybrid language model of linear- and full-attention layers (Qwen3.5).

Both use `Qwen3VLProcessor` (without its video sub-processor, which needs torchvision; videos are
built by hand, `plphp.models.video`, frame by frame between timestamps) around the
Qwen tiny tokenizer, so their token ids and prompts are those of the tiny Qwen2.5-VL.
"""

from __future__ import annotations

from typing import Any

from transformers import GenerationConfig, Qwen2VLImageProcessorPil, Qwen3_5Config, Qwen3VLConfig, Qwen3VLProcessor

from plphp.models.common import (
    _CLIP_MEAN,
    _CLIP_STD,
    _PATCH_SIZE,
    _QWEN_MAX_PIXELS,
    _QWEN_MIN_PIXELS,
    _TEXT_INIT_STD,
)
from plphp.models.shrink import split_overrides
from plphp.models.tokenizer import _CHAT_TEMPLATES, _build_tokenizer

#: Vision blocks whose features DeepStack adds to the first decoder layers (one decoder layer each):
#: two, so a prefill-stage start at layer 1 is refused and FastV's K=2 holds.
DEEPSTACK_BLOCKS = [0, 1]
#: Qwen3.5's layer pattern, shrunk to four layers: three linear-attention layers, then full attention.
QWEN3_5_LAYER_TYPES = ["linear_attention", "full_attention", "linear_attention", "full_attention"]


class TinyQwen3VLProcessor(Qwen3VLProcessor):
    """`Qwen3VLProcessor` without the video sub-processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def _ids() -> dict[str, int]:
    tokenizer = _build_tokenizer("qwen2_5_vl")
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
        "eos_token_id": "<|im_end|>",
        "pad_token_id": "<|endoftext|>",
    }
    return {name: tokenizer.convert_tokens_to_ids(token) for name, token in names.items()} | {
        "vocab_size": len(tokenizer)
    }


def build_config(
    arch: str, *, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, **overrides: Any
) -> Qwen3VLConfig | Qwen3_5Config:
    """The shrunk Qwen3-VL / Qwen3.5 config (see `plphp.models.tiny.build_tiny_config`)."""
    text_over, vision_over, top_over = split_overrides(overrides)
    ids = _ids()
    head_dim = hidden_size // num_heads
    text: dict[str, Any] = {
        "vocab_size": ids["vocab_size"],
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,  # the configs default to 128 / 256
        "max_position_embeddings": 4096,
        "initializer_range": _TEXT_INIT_STD,
        "pad_token_id": ids["pad_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "tie_word_embeddings": False,
    }
    # 8x8 patches merged 2x2 as the other tiny Qwen models; an 8x8 table of learned positions.
    vision: dict[str, Any] = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": _PATCH_SIZE,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden_size,
        "num_position_embeddings": 64,
    }
    top = {name: ids[name] for name in ("image_token_id", "video_token_id", "vision_start_token_id")}
    top["vision_end_token_id"] = ids["vision_end_token_id"]
    if arch == "qwen3_vl":
        # Interleaved M-RoPE (t, h, w, t, h, w, ...) over the rotary half-dimension, as the real model.
        spatial = (head_dim // 2) * 3 // 8
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [head_dim // 2 - 2 * spatial, spatial, spatial],
            "mrope_interleaved": True,
        }
        vision["deepstack_visual_indexes"] = DEEPSTACK_BLOCKS
        return Qwen3VLConfig(text_config=text | text_over, vision_config=vision | vision_over, **(top | top_over))
    if arch != "qwen3_5":
        raise ValueError(f"tiny_qwen3_vl builds qwen3_vl and qwen3_5, not {arch!r}")
    # Rotary embedding over half of each head (the real model: a quarter of 256), split t / h / w.
    rotary_half = head_dim // 4
    text |= {
        "layer_types": (QWEN3_5_LAYER_TYPES * num_layers)[:num_layers],
        "linear_num_key_heads": num_kv_heads,
        "linear_num_value_heads": num_heads,
        "linear_key_head_dim": head_dim,
        "linear_value_head_dim": head_dim,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "mrope_section": [rotary_half - 2 * (rotary_half // 4), rotary_half // 4, rotary_half // 4],
            "mrope_interleaved": True,
        },
    }
    return Qwen3_5Config(text_config=text | text_over, vision_config=vision | vision_over, **(top | top_over))


def build_processor(arch: str) -> TinyQwen3VLProcessor:
    """`Qwen3VLProcessor` around the tiny Qwen tokenizer, Qwen2-VL's image processor at 8x8 patches."""
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": _QWEN_MIN_PIXELS, "longest_edge": _QWEN_MAX_PIXELS},
        patch_size=_PATCH_SIZE,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    tokenizer = _build_tokenizer("qwen2_5_vl")
    return TinyQwen3VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=_CHAT_TEMPLATES["qwen2_5_vl"]
    )


def generation_config(arch: str) -> GenerationConfig:
    """Qwen's: stop at <|im_end|> or <|endoftext|>, pad with <|endoftext|>."""
    ids = _ids()
    eos = [ids["eos_token_id"], ids["pad_token_id"]]
    return GenerationConfig(bos_token_id=ids["pad_token_id"], eos_token_id=eos, pad_token_id=ids["pad_token_id"])


PROCESSOR_CLASSES = (TinyQwen3VLProcessor,)
