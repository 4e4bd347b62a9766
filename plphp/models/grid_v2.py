"""The grid model v2: a tiny LLaVA whose vision tokens each hold only their own patch's pixels.

v1 (`plphp.models.grid`) taught every patch to carry its whole grid cell, so its vision tokens are
nine-fold redundant and random pruning loses nothing. v2 changes what a vision token can know:

- vision tower: SigLIP read before its one layer (`vision_feature_layer=-2`: the patch and position
  embeddings, before any attention between patches; its one encoder layer is computed but unused),
  so each token is a function of its own 12 x 12 pixels and its position only; on
  72 x 72 pixels that is 6 x 6 = 36 tokens per image and 2 x 2 patches per grid cell, each patch
  one quadrant of its cell's shape. An answer about a cell needs that cell's patches;
- projector: LLaVA's two-layer MLP (still per token);
- language model: Qwen2, 16 decoder layers, width 128, 4 query heads and 2 key/value heads, so the
  default `plphp` preset (start layer 2) prunes 14 of 16 layers and removes over half the vision KV;
- chat template: each image is followed by its ordinal word (``<image> first <image> second``),
  a label token that can summarise the picture before it;
- pictures: the tasks' `quadrant` layout (`plphp.tasks`, "Layouts"): each shape is drawn small,
  in one quadrant of its cell, so it lies in exactly one vision token and a policy that drops
  that token loses the answer. `plphp.models.builtin.task_layout` reads the layout from the
  `training.json` beside the weights, and `plphp eval` draws it by default.

Same tokenizer, questions and answers as v1. `training/train_grid_v2.py` trains it;
`load_grid_v2_model` loads the shipped weights from `GRID_V2_MODEL_DIR`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import torch
from transformers import LlavaConfig, LlavaImageProcessorPil, LlavaProcessor, Qwen2Config, SiglipVisionConfig

from plphp.models.grid import _token_id, build_grid_tokenizer, grid_text_config, load_grid_model
from plphp.tasks import ORDINALS

#: Where the trained v2 checkpoint ships, inside the package.
GRID_V2_MODEL_DIR = pathlib.Path(__file__).parent / "grid_v2"

IMAGE_SIZE = 72
PATCH_SIZE = 12
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2
NUM_LAYERS = 16

# As v1's template, but each image's ordinal word comes after its `<image>` placeholder.
CHAT_TEMPLATE_V2 = (
    "{% set ordinals = " + repr(list(ORDINALS)) + " %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% set images = namespace(count=0) %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image> "
    "{% if images.count < ordinals | length %}{{ ordinals[images.count] }} {% endif %}"
    "{% set images.count = images.count + 1 %}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{% endif %}"
)


def build_grid_v2_processor() -> LlavaProcessor:
    """LLaVA's processor: resize to 72x72, SigLIP normalisation, 36 `<image>` tokens per image."""
    image_processor = LlavaImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_grid_tokenizer(CHAT_TEMPLATE_V2),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE_V2,
    )


def build_grid_v2_config(**text_overrides: Any) -> LlavaConfig:
    """The v2 config (`text_overrides` go to the Qwen2 language model's config)."""
    text = grid_text_config(NUM_LAYERS, **text_overrides)
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,  # computed but not read: the features are layer 0's (see vision_feature_layer)
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        vision_use_head=False,
    )
    return LlavaConfig(
        text_config=Qwen2Config(**text),
        vision_config=vision,
        image_token_index=_token_id("<image>"),
        image_seq_length=TOKENS_PER_IMAGE,
        vision_feature_select_strategy="full",
        vision_feature_layer=-2,  # the patch embeddings (of 2 hidden states): no attention between patches
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )


def load_grid_v2_model(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
) -> tuple[Any, LlavaProcessor]:
    """Load the trained grid model v2 and its processor (default: the checkpoint shipped with plphp).

    Same arguments as `plphp.models.grid.load_grid_model`, whose loading it uses.

    Raises:
        FileNotFoundError: when the directory holds no checkpoint.
    """
    path = pathlib.Path(path) if path is not None else GRID_V2_MODEL_DIR
    return load_grid_model(path, device=device, dtype=dtype, attn_implementation=attn_implementation)
