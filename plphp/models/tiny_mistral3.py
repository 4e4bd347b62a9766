"""Tiny Mistral 3 (`plphp.models.families`): a Pixtral tower with 8x8 patches merged 2x2, so one
`[IMG]` token per 16x16 pixels, rows of them ended by `[IMG_BREAK]` and the image by `[IMG_END]`.

transformers' `PixtralProcessor` cannot be imported here: its module imports the torchvision image
processor. `TinyPixtralProcessor` is a `ProcessorMixin` that writes the same prompt (rows of `[IMG]`
ended by `[IMG_BREAK]`, the last by `[IMG_END]`) around the real `PixtralImageProcessorPil` and a
tiny tokenizer whose special tokens keep their order in Mistral's vocabulary. `MistralConfig` defaults to `sliding_window=4096`, which
would make every layer a sliding one; Mistral 3 (and this model) has none.
"""

from __future__ import annotations

from typing import Any

from transformers import (
    GenerationConfig,
    Mistral3Config,
    MistralConfig,
    PixtralImageProcessorPil,
    PixtralVisionConfig,
    ProcessorMixin,
)

from plphp.models.common import _CLIP_MEAN, _CLIP_STD, _PATCH_SIZE
from plphp.models.shrink import split_overrides, text_kwargs
from plphp.models.tokenizer import build_tokenizer

LONGEST_EDGE = 128  # pixels; at most 8 x 8 = 64 [IMG] tokens

_SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]")
_IDS = {token: idx for idx, token in enumerate(_SPECIALS)}
_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST]{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}[IMG]"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %}[/INST]{% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


class TinyPixtralProcessor(ProcessorMixin):
    """Pixtral's prompt layout without the module that needs torchvision.

    Each image placeholder `[IMG]` becomes, per row of merged patches (`patch_size *
    spatial_merge_size` pixels), one `[IMG]` per column and a `[IMG_BREAK]`, the last row's break
    replaced by `[IMG_END]`; `image_sizes` (height, width after resizing) goes to the model.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, patch_size=16, spatial_merge_size=1):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.patch_size = patch_size
        self.spatial_merge_size = spatial_merge_size
        self.image_token = "[IMG]"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

    def _process_images(self, images, **images_kwargs):
        images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size
        return super()._process_images(images, **images_kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        step = self.patch_size * self.spatial_merge_size
        height, width = (int(v) for v in image_inputs["image_sizes"][image_idx])
        rows = ["[IMG]" * (width // step)] * (height // step)
        return "[IMG_BREAK]".join(rows) + "[IMG_END]"

    @property
    def model_input_names(self):
        return self.tokenizer.model_input_names + self.image_processor.model_input_names + ["image_sizes"]


PROCESSOR_CLASSES = (TinyPixtralProcessor,)


def build_config(
    arch: str, *, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int, **overrides: Any
) -> Mistral3Config:
    """The shrunk Mistral 3 config (see `plphp.models.tiny.build_tiny_config`)."""
    text_over, vision_over, top_over = split_overrides(overrides)
    sizes = dict(num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads, num_kv_heads=num_kv_heads)
    text = MistralConfig(
        **text_kwargs(_SPECIALS, **sizes, bos="<s>", eos="</s>", pad="<pad>") | {"sliding_window": None} | text_over
    )
    vision = PixtralVisionConfig(
        **{
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "head_dim": 16,
            "image_size": LONGEST_EDGE,
            "patch_size": _PATCH_SIZE,
        }
        | vision_over
    )
    top = {"image_token_index": _IDS["[IMG]"], "spatial_merge_size": 2, "vision_feature_layer": -1}
    return Mistral3Config(text_config=text, vision_config=vision, **(top | top_over))


def _tokenizer():
    names = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    return build_tokenizer(_SPECIALS, names, _TEMPLATE)


def build_processor(arch: str) -> TinyPixtralProcessor:
    """`TinyPixtralProcessor`: pictures resized to at most 128 pixels a side, in multiples of 16."""
    image_processor = PixtralImageProcessorPil(
        size={"longest_edge": LONGEST_EDGE},
        patch_size={"height": _PATCH_SIZE, "width": _PATCH_SIZE},
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    return TinyPixtralProcessor(
        image_processor=image_processor,
        tokenizer=_tokenizer(),
        patch_size=_PATCH_SIZE,
        spatial_merge_size=2,
        chat_template=_TEMPLATE,
    )


def generation_config(arch: str) -> GenerationConfig:
    """Mistral's: stop at </s>."""
    return GenerationConfig(bos_token_id=_IDS["<s>"], eos_token_id=_IDS["</s>"], pad_token_id=_IDS["<pad>"])
