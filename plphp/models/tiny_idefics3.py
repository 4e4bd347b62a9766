"""Tiny Idefics3 and SmolVLM (`Idefics3ForConditionalGeneration`, `SmolVLMForConditionalGeneration`).

The image processor resizes an image so its longest edge is 96 pixels and, when it is
larger than one 32×32 sub-image, splits it into a grid of sub-images plus a global image (the whole
picture at 32×32). The tower (SigLIP shape, 2 layers, width 32, 4×4 patches) gives 8×8 patches per
sub-image, and a pixel shuffle (`scale_factor` 2) folds them into 16 tokens. The prompt reads
`<fake_token_around_image><row_1_col_1><image>×16 ... \\n\\n<fake_token_around_image><global-img>
<image>×16<fake_token_around_image>`; only `<image>` tokens are vision tokens. `pixel_values` are
5-D (`[B, images, 3, 32, 32]`), padded with all-zero images, which the model skips.

SmolVLM's own processor needs the `num2words` package and a video processor (torchvision); its
image prompts are Idefics3's character for character, so both tiny models use `Idefics3Processor`.
"""

from __future__ import annotations

from typing import Any

from transformers import (
    GenerationConfig,
    Idefics3Config,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlamaConfig,
    SmolVLMConfig,
)

from plphp.models.common import _CLIP_MEAN, _CLIP_STD
from plphp.models.shrink import split_overrides, text_kwargs, token_id
from plphp.models.tokenizer import build_tokenizer

ARCHITECTURES = ("idefics3", "smolvlm")

_SPECIALS = (
    "<pad>",
    "<|begin_of_text|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
)
_SUB_IMAGE = 32
_LONGEST_EDGE = 96
_PATCH = 4
_SCALE_FACTOR = 2
#: Tokens per sub-image and per global image: (32 / 4)² patches, pixel shuffle 2 -> 16.
TOKENS_PER_SUB_IMAGE = (_SUB_IMAGE // _PATCH) ** 2 // _SCALE_FACTOR**2

_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_config(
    arch: str, *, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, **overrides: Any
) -> Idefics3Config | SmolVLMConfig:
    """The shrunk config: a Llama language model and a 2-layer SigLIP-shaped tower."""
    text_over, vision_over, top_over = split_overrides(overrides)
    text = text_kwargs(
        _SPECIALS,
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        bos="<|begin_of_text|>",
        eos="<end_of_utterance>",
        pad="<pad>",
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": _SUB_IMAGE,
        "patch_size": _PATCH,
    }
    config_class = Idefics3Config if arch == "idefics3" else SmolVLMConfig
    return config_class(
        **{
            "text_config": LlamaConfig(**(text | text_over)),
            "vision_config": vision | vision_over,
            "image_token_id": token_id(_SPECIALS, "<image>"),
            "scale_factor": _SCALE_FACTOR,
            "pad_token_id": token_id(_SPECIALS, "<pad>"),
        }
        | top_over
    )


def build_processor(arch: str) -> Idefics3Processor:
    """`Idefics3Processor` with its image processor (PIL backend) and the tiny tokenizer."""
    tokenizer = build_tokenizer(
        _SPECIALS,
        {"pad_token": "<pad>", "bos_token": "<|begin_of_text|>", "eos_token": "<end_of_utterance>"},
        _TEMPLATE,
    )
    images = Idefics3ImageProcessorPil(
        size={"longest_edge": _LONGEST_EDGE},
        max_image_size={"longest_edge": _SUB_IMAGE},
        do_image_splitting=True,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    return Idefics3Processor(
        image_processor=images, tokenizer=tokenizer, image_seq_len=TOKENS_PER_SUB_IMAGE, chat_template=_TEMPLATE
    )


def generation_config(arch: str) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=token_id(_SPECIALS, "<|begin_of_text|>"),
        eos_token_id=token_id(_SPECIALS, "<end_of_utterance>"),
        pad_token_id=token_id(_SPECIALS, "<pad>"),
    )
