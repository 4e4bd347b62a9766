"""The models that plphp builds or ships: tiny vision-language models of real transformers
architectures with random weights (`plphp.models.tiny`, `plphp.models.processors`,
`plphp.models.tokenizer`), and the trained grid model (`plphp.models.grid`, `load_grid_model`).

`load_builtin_model(name)` gives either by name ("grid" or an architecture of `ARCHITECTURES`).

Everything here is built offline from configs: no weights, tokenizers or processors are
downloaded. Each model is a real transformers class (LLaVA, LLaVA-NeXT, LLaVA-OneVision,
Qwen2-VL, Qwen2.5-VL, and in `plphp.models.families`' modules Qwen3-VL, Qwen3.5, Gemma 3,
Mistral 3, InternVL, Idefics3, SmolVLM and LLaVA-NeXT-Video) with a few decoder layers,
grouped-query attention (4 query heads, 2 KV
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
and Qwen2.5-VL 16 / 48 / 48 (one token per 16x16 pixels, between 4 and 100), Qwen3-VL and
Qwen3.5 the same, Mistral 3 16 / 48 / 48 `[IMG]` tokens (plus one break or end token per row),
Gemma 3 16 (a fixed 64x64 input pooled to 4x4), InternVL 80 / 112 / 112 (32x32 tiles plus a
thumbnail, 16 tokens each), Idefics3 and SmolVLM 160 / 160 / 160 (3x3 sub-images plus a global
image, 16 tokens each). Videos: `plphp.models.video`.

Examples:
    >>> from plphp import models
    >>> from plphp.backends.inputs import chat_inputs
    >>> model = models.build_tiny_model("qwen2_vl")
    >>> processor = models.build_tiny_processor("qwen2_vl")
    >>> inputs = chat_inputs(processor, [("What is shown?", [models.make_image(64, 96)])])
    >>> out = model.generate(**inputs, max_new_tokens=5)

Note:
    transformers' Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision processors need a video processor,
    which needs torchvision. plphp does not depend on torchvision, so for these three
    architectures the processor is a subclass of the real one without the video sub-processor
    (``TinyQwen2VLProcessor``, ``TinyQwen2_5_VLProcessor``, ``TinyLlavaOnevisionProcessor``);
    image processing, placeholder expansion and tokenization are the real classes' code. Qwen3-VL
    and Qwen3.5 do the same (``TinyQwen3VLProcessor``). Mistral 3's ``PixtralProcessor`` cannot be
    imported at all without torchvision, so ``TinyPixtralProcessor`` writes its prompt layout
    around the real image processor. These classes are registered with ``AutoProcessor`` by :func:`register_processors` (importing
    plphp registers nothing), so ``AutoProcessor.from_pretrained`` loads a directory written by
    :func:`save_tiny` in any process that has called it. The saved ``processor_config.json`` also
    has an ``auto_map`` to a one-line module re-exporting the class, so that a process that never
    imported plphp is asked for ``trust_remote_code=True`` (and then loads it) instead of silently
    getting the tokenizer alone, which is what transformers returns when it cannot find the class.
"""

from __future__ import annotations

from plphp.models.builtin import BUILTIN_MODELS, GRID, GRID_V2, load_builtin_model
from plphp.models.common import ARCHITECTURES
from plphp.models.grid import GRID_MODEL_DIR, build_grid_config, build_grid_processor, load_grid_model
from plphp.models.grid_v2 import GRID_V2_MODEL_DIR, build_grid_v2_config, build_grid_v2_processor, load_grid_v2_model
from plphp.models.images import make_image
from plphp.models.processors import (
    TinyLlavaOnevisionProcessor,
    TinyQwen2_5_VLProcessor,
    TinyQwen2VLProcessor,
    build_tiny_processor,
    register_processors,
)
from plphp.models.tiny import build_tiny_config, build_tiny_model, load_tiny, save_tiny

__all__ = [
    "ARCHITECTURES",
    "BUILTIN_MODELS",
    "GRID",
    "GRID_MODEL_DIR",
    "GRID_V2",
    "GRID_V2_MODEL_DIR",
    "TinyLlavaOnevisionProcessor",
    "TinyQwen2VLProcessor",
    "TinyQwen2_5_VLProcessor",
    "build_grid_config",
    "build_grid_processor",
    "build_grid_v2_config",
    "build_grid_v2_processor",
    "build_tiny_config",
    "build_tiny_model",
    "build_tiny_processor",
    "make_image",
    "load_builtin_model",
    "load_grid_model",
    "load_grid_v2_model",
    "load_tiny",
    "register_processors",
    "save_tiny",
]
