"""Tiny Gemma 3 (`plphp.models.families`): a SigLIP tower pooled to 16 tokens per image, and a
language model that alternates sliding-window and global layers.

The real model has five sliding layers per global one; four layers here alternate them
(sliding, global, sliding, global), so the default `start_layer` of 2 prunes one global layer and
keeps one sliding layer whole. The window (16) is shorter than every test prompt, so the sliding
layers' caches really hold only their window. The processor is the real `Gemma3Processor` around
a tiny tokenizer with Gemma's special tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    Gemma3Config,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    GenerationConfig,
    SiglipVisionConfig,
)

from plphp.models.common import _PATCH_SIZE, _TEXT_INIT_STD
from plphp.models.shrink import split_overrides, text_kwargs
from plphp.models.tokenizer import build_tokenizer

IMAGE_SIZE = 64  # 8x8 patches of 8 pixels
TOKENS_PER_IMAGE = 16  # average-pooled to 4x4
SLIDING_WINDOW = 16
LAYER_PATTERN = ["sliding_attention", "full_attention"]

_SPECIALS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
_IDS = {token: idx for idx, token in enumerate(_SPECIALS)}
_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _tokenizer():
    return build_tokenizer(
        _SPECIALS,
        {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"},
        _TEMPLATE,
        {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
    )


def build_config(
    arch: str, *, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, **overrides: Any
) -> Gemma3Config:
    """The shrunk Gemma 3 config (see `plphp.models.tiny.build_tiny_config`)."""
    text_over, vision_over, top_over = split_overrides(overrides)
    head_dim = hidden_size // num_heads
    sizes = dict(num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads, num_kv_heads=num_kv_heads)
    text = Gemma3TextConfig(
        **text_kwargs(_SPECIALS, **sizes, bos="<bos>", eos="<eos>", pad="<pad>")
        | {
            "query_pre_attn_scalar": head_dim,
            "sliding_window": SLIDING_WINDOW,
            "layer_types": (LAYER_PATTERN * num_layers)[:num_layers],
        }
        | text_over
    )
    vision = SiglipVisionConfig(
        **{
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": _PATCH_SIZE,
        }
        | vision_over
    )
    top = {
        "mm_tokens_per_image": TOKENS_PER_IMAGE,
        "boi_token_index": _IDS["<start_of_image>"],
        "eoi_token_index": _IDS["<end_of_image>"],
        "image_token_index": _IDS["<image_soft_token>"],
        # Tied embeddings (the real default) leave greedy decoding stuck on one token at this size.
        "tie_word_embeddings": False,
    }
    return Gemma3Config(text_config=text, vision_config=vision, **(top | top_over))


def initialize(arch: str, model: Any) -> None:
    """Draw the projector's weight, which Gemma 3's init zeroes (every image would embed to 0)."""
    weight = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        weight.normal_(0.0, _TEXT_INIT_STD)


def build_processor(arch: str) -> Gemma3Processor:
    """`Gemma3Processor` (no pan-and-scan) at the tiny tower's 64x64 input."""
    image_processor = Gemma3ImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=_tokenizer(),
        chat_template=_TEMPLATE,
        image_seq_length=TOKENS_PER_IMAGE,
    )


def generation_config(arch: str) -> GenerationConfig:
    """Gemma's: stop at <eos> or <end_of_turn>."""
    return GenerationConfig(
        bos_token_id=_IDS["<bos>"],
        eos_token_id=[_IDS["<eos>"], _IDS["<end_of_turn>"]],
        pad_token_id=_IDS["<pad>"],
    )
