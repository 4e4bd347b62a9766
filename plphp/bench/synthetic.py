"""Vision tokens for text-only models: prefill benchmarks at real language-model shapes, no vision tower.

A text-only model has no vision tokens, so `SyntheticVision` declares one token id a vision token:
while it is active (a context manager), it contributes `SyntheticVisionAdapter` through plphp's
ordinary `plphp_adapters` hook (`plphp.register_plugin`), and removes it on exit:

    with SyntheticVision(vision_token_id=vocab - 1):
        with plphp.apply(text_model, "plphp") as session:
            text_model(vision_prompt(4096, 0.9, vision_token_id=vocab - 1), use_cache=True)

The adapter sets `text_config_key = ""`, which is how `set_attn_implementation`'s dict form
addresses the top-level config: a text-only model has no `text_config` sub-config, and its
`get_text_config(decoder=True)` is the config itself. `qwen2_text_model` builds the Qwen2-0.5B
shaped text model of the prefill benchmarks, `vision_prompt` their prompts. For the input stage,
which reads the vision tower, `llava_qwen2_model` is a real LLaVA whose decoder has the Qwen2-0.5B
shape and whose CLIP tower has LLaVA-1.5's geometry (336 px, 14 px patches: 576 tokens per image) at
a tiny width, so the tower costs next to nothing; `image_inputs` builds its prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from plphp.backends.adapters import ModelAdapter
from plphp.errors import ConfigError
from plphp.hookspecs import hookimpl
from plphp.registry import register_plugin, unregister_plugin

#: The real Qwen2-0.5B shape (vocabulary aside).
QWEN2_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
REAL_VOCAB = 151936


class SyntheticVisionAdapter(ModelAdapter):
    """A text-only model with one token id treated as a vision token (given at construction)."""

    name = "synthetic_vision"
    architectures = ("Qwen2ForCausalLM",)
    #: A text-only model's config is its own text config: "" addresses it in `set_attn_implementation`.
    text_config_key = ""

    def __init__(self, model: Any, vision_token_id: int):
        super().__init__(model)
        self.vision_token_id = int(vision_token_id)

    def vision_token_ids(self) -> list[int]:
        return [self.vision_token_id]


class SyntheticVision:
    """A run-time plugin serving text-only models with `SyntheticVisionAdapter`; a context manager
    that registers it on entry and unregisters it on exit.

    Args:
        vision_token_id: the token id that stands for a vision token.
        architectures: the model classes it serves (default `Qwen2ForCausalLM`).
    """

    def __init__(self, vision_token_id: int, architectures: Sequence[str] = SyntheticVisionAdapter.architectures):
        token_id, classes = int(vision_token_id), tuple(architectures)

        class Adapter(SyntheticVisionAdapter):
            architectures = classes

            def __init__(self, model: Any):
                super().__init__(model, token_id)

        Adapter.__name__ = Adapter.__qualname__ = SyntheticVisionAdapter.__name__
        self.vision_token_id = token_id
        self.adapter = Adapter

    @hookimpl
    def plphp_adapters(self) -> list[type]:
        return [self.adapter]

    def __enter__(self) -> SyntheticVision:
        register_plugin(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        unregister_plugin(self)


def qwen2_text_model(layers: int = 24, vocab: int = 4096) -> Any:
    """`Qwen2ForCausalLM` of the real Qwen2-0.5B shape with `layers` decoder layers and a `vocab`
    vocabulary (it changes only the embedding and the LM head): random weights (seed 0), float32, sdpa."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=vocab, **{**QWEN2_05B, "num_hidden_layers": layers}, attn_implementation="sdpa")
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(torch.float32).eval()


def vision_prompt(tokens: int, vision_fraction: float, vision_token_id: int, images: int = 1) -> torch.Tensor:
    """`[1, tokens]` ids: text, `images` blocks of `vision_token_id` (one text token between blocks),
    text; about a third of the text comes first (a system prompt), the rest after (a question).
    Text ids are random below `vision_token_id` (seed 1)."""
    num_vision = int(round(tokens * vision_fraction))
    separators = images - 1
    num_text = tokens - num_vision - separators
    if num_text < 2 or num_vision < images:
        raise ConfigError(f"--tokens {tokens} / --vision-fraction {vision_fraction} leave too few text tokens")
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vision_token_id, (1, tokens), generator=generator)  # never the vision id
    per_image = [num_vision // images + (1 if i < num_vision % images else 0) for i in range(images)]
    position = num_text // 3
    for i, count in enumerate(per_image):
        ids[0, position : position + count] = vision_token_id
        position += count + (1 if i < images - 1 else 0)
    return ids


#: LLaVA-1.5's image geometry: 336 px crops of 14 px patches, 576 vision tokens per image.
LLAVA_IMAGE_SIZE, LLAVA_PATCH_SIZE = 336, 14


def llava_qwen2_model(layers: int = 24, vocab: int = 4096) -> Any:
    """`LlavaForConditionalGeneration`: the Qwen2-0.5B decoder of `qwen2_text_model` and a 2-layer,
    64-wide CLIP tower at LLaVA-1.5's geometry; random weights (seed 0), float32, sdpa."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    text = Qwen2Config(vocab_size=vocab, **{**QWEN2_05B, "num_hidden_layers": layers})
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=LLAVA_IMAGE_SIZE,
        patch_size=LLAVA_PATCH_SIZE,
        projection_dim=64,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=vocab - 1,
        image_seq_length=(LLAVA_IMAGE_SIZE // LLAVA_PATCH_SIZE) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).to(torch.float32).eval()


def image_inputs(model: Any, text_tokens: int = 64, images: int = 1) -> dict[str, torch.Tensor]:
    """Model inputs of one prompt: a third of `text_tokens` text ids, `images` images of 576 tokens
    (one text token between), the rest of the text; random pixels (seed 1)."""
    config = model.config
    per_image = config.image_seq_length
    generator = torch.Generator().manual_seed(1)
    length = text_tokens + images * per_image + images - 1
    ids = torch.randint(0, config.image_token_index, (1, length), generator=generator)  # never the image id
    first = text_tokens // 3
    for image in range(images):
        start = first + image * (per_image + 1)
        ids[0, start : start + per_image] = config.image_token_index
    pixels = torch.randn(images, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
