"""Tiny models of the architectures beyond the first five, one module per family.

A family module (`plphp.models.tiny_<family>`) defines, for the architecture names it builds:

- `build_config(arch, *, num_layers, hidden_size, num_heads, num_kv_heads, **overrides)`: the
  shrunk real config, with token ids matching its processor;
- `build_processor(arch)`: the architecture's processor around the tiny tokenizer;
- `generation_config(arch)`: pad / eos / bos token ids;
- optionally `PROCESSOR_CLASSES`: plphp's own processor classes the module defines (registered
  with `AutoProcessor` by `register_processors`, and named in a saved model's `auto_map`);
- optionally `initialize(arch, model)`: weights the architecture's own init leaves unusable in a
  tiny random model (Gemma 3 zeroes its projector), drawn under the model's seed.

`tiny.py` and `processors.py` hand these architectures to their family; everything else
(`build_tiny_model`, `save_tiny`, `plphp.testing`) is shared.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Architecture name -> the module of `plphp.models` that builds it.
FAMILY_OF: dict[str, str] = {
    "qwen3_vl": "tiny_qwen3_vl",
    "qwen3_5": "tiny_qwen3_vl",
    "gemma3": "tiny_gemma3",
    "mistral3": "tiny_mistral3",
    "internvl": "tiny_internvl",
    "idefics3": "tiny_idefics3",
    "smolvlm": "tiny_idefics3",
    "llava_next_video": "tiny_llava_next_video",
}


def family(arch: str) -> ModuleType | None:
    """The family module building `arch`, or None for the first five architectures."""
    name = FAMILY_OF.get(arch)
    return family_module(name) if name else None


def processor_classes() -> tuple[type, ...]:
    """The processor classes of plphp's own that the family modules define (`PROCESSOR_CLASSES`)."""
    modules = dict.fromkeys(FAMILY_OF.values())
    return tuple(cls for name in modules for cls in getattr(family_module(name), "PROCESSOR_CLASSES", ()))


def family_module(name: str) -> ModuleType:
    """The family module `plphp.models.<name>`."""
    return importlib.import_module(f"plphp.models.{name}")
