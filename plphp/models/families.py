"""Tiny models of the architectures beyond the first five, one module per family.

A family module (`plphp.models.tiny_<family>`) defines, for the architecture names it builds:

- `build_config(arch, *, num_layers, hidden_size, num_heads, num_kv_heads, **overrides)`: the
  shrunk real config, with token ids matching its processor;
- `build_processor(arch)`: the architecture's processor around the tiny tokenizer;
- `generation_config(arch)`: pad / eos / bos token ids;
- optionally `PROCESSORS`: processor classes of plphp's own (a real processor without its video
  sub-processor, which needs torchvision), registered by `register_processors` so that a saved
  tiny model loads with `AutoProcessor`.

`tiny.py` and `processors.py` hand these architectures to their family; everything else
(`build_tiny_model`, `save_tiny`, `plphp.testing`) is shared.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Architecture name -> the module of `plphp.models` that builds it.
FAMILY_OF: dict[str, str] = {
    "internvl": "tiny_internvl",
    "idefics3": "tiny_idefics3",
    "smolvlm": "tiny_idefics3",
    "llava_next_video": "tiny_llava_next_video",
}


def family(arch: str) -> ModuleType | None:
    """The family module building `arch`, or None for the first five architectures."""
    name = FAMILY_OF.get(arch)
    return importlib.import_module(f"plphp.models.{name}") if name else None


def processor_classes() -> tuple[type, ...]:
    """The `PROCESSORS` of every family module, in `FAMILY_OF` order."""
    names = dict.fromkeys(FAMILY_OF.values())
    return tuple(
        cls for name in names for cls in getattr(importlib.import_module(f"plphp.models.{name}"), "PROCESSORS", ())
    )
