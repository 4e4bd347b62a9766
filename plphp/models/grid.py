"""The grid model: a tiny LLaVA that the project trains on its synthetic grid tasks and ships.

Unlike the random-weight models of this package, this one answers the questions of
`plphp.tasks` (where is the red circle? what is in row 2? which images show a blue square?), so a
pruning policy's effect on real answers can be measured without downloading anything.

Architecture (a real `LlavaForConditionalGeneration`, loaded with `from_pretrained`):

- vision tower: SigLIP, 3 layers, width 64, 8x8 patches on 72x72 pixels, so 9 x 9 = 81 vision
  tokens per image; the processor resizes the tasks' 96x96 scenes to 72x72, which puts every grid
  cell on exactly 3 x 3 patches;
- projector: LLaVA's two-layer MLP;
- language model: Qwen2, 8 decoder layers, width 128, 4 query heads and 2 key/value heads
  (grouped-query attention, head_dim 32);
- tokenizer: one token per word of the tasks' vocabulary (`plphp.tasks.vocabulary`) plus a few
  chat tokens; a chat template that labels each image with its ordinal word
  (``first <image> second <image> ...``), as multi-image chat models label their pictures.

`build_grid_config` / `build_grid_processor` define it; `training/train_grid_model.py` trains it;
`load_grid_model` loads the shipped weights from `GRID_MODEL_DIR`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    GenerationConfig,
    LlavaConfig,
    LlavaImageProcessorPil,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from plphp.tasks import ORDINALS, vocabulary

#: Where the trained checkpoint ships, inside the package.
GRID_MODEL_DIR = pathlib.Path(__file__).parent / "grid_llava"

IMAGE_SIZE = 72
PATCH_SIZE = 8
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>")
ROLE_WORDS: tuple[str, ...] = ("user", "assistant")

# Content: a string, or a list of {"type": "image"} / {"type": "text", "text": ...} items. Images
# are labelled with ordinal words (the tasks' own `ORDINALS`), so that "which images ..." can be
# answered by naming them; past the fourth image there is no label.
CHAT_TEMPLATE = (
    "{% set ordinals = " + repr(list(ORDINALS)) + " %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% set images = namespace(count=0) %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}"
    "{% if images.count < ordinals | length %}{{ ordinals[images.count] }} {% endif %}<image> "
    "{% set images.count = images.count + 1 %}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{% endif %}"
)


def grid_vocabulary() -> list[str]:
    """Every token of the grid model, in id order: special tokens, role words, task words."""
    return [*SPECIAL_TOKENS, *ROLE_WORDS, *vocabulary()]


def build_grid_tokenizer(chat_template: str = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tasks' vocabulary (lowercased; unknown words map to `<unk>`)."""
    vocab = {token: index for index, token in enumerate(grid_vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # words, and each punctuation mark alone
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # "red circle , empty" -> "red circle, empty"
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        model_max_length=1024,
        chat_template=chat_template,
    )


def build_grid_processor() -> LlavaProcessor:
    """LLaVA's own processor: resize to 72x72, SigLIP normalisation, 81 `<image>` tokens per image."""
    image_processor = LlavaImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_grid_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
    )


def _token_id(token: str) -> int:
    return grid_vocabulary().index(token)


def grid_text_config(num_layers: int, **text_overrides: Any) -> dict[str, Any]:
    """The grid models' Qwen2 language model settings (v1: 8 layers; v2: `plphp.models.grid_v2`)."""
    return {
        "vocab_size": len(grid_vocabulary()),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "bos_token_id": _token_id("<|im_start|>"),
        "eos_token_id": _token_id("<|im_end|>"),
        "pad_token_id": _token_id("<pad>"),
    } | text_overrides


def build_grid_config(**text_overrides: Any) -> LlavaConfig:
    """The grid model's config (`text_overrides` go to the Qwen2 language model's config)."""
    text = grid_text_config(8, **text_overrides)
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
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
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )


def grid_generation_config() -> GenerationConfig:
    """Greedy answers that stop at `<|im_end|>`."""
    return GenerationConfig(
        bos_token_id=_token_id("<|im_start|>"),
        eos_token_id=_token_id("<|im_end|>"),
        pad_token_id=_token_id("<pad>"),
        do_sample=False,
        max_new_tokens=16,
    )


def load_grid_model(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
) -> tuple[Any, LlavaProcessor]:
    """Load the trained grid model and its processor (default: the checkpoint shipped with plphp).

    Args:
        path: a directory written by the training script; default `GRID_MODEL_DIR`.
        device: where the model goes.
        dtype: parameter dtype.
        attn_implementation: transformers attention implementation ("sdpa", "eager", ...).

    Returns:
        `(model, processor)`, the model in eval mode.

    Raises:
        FileNotFoundError: when the directory holds no checkpoint.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = pathlib.Path(path) if path is not None else GRID_MODEL_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no grid model in {path}: expected config.json and model.safetensors written by "
            "training/train_grid_model.py"
        )
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    return model.to(device).eval(), processor
