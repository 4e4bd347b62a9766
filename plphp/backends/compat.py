"""What differs between the transformers releases plphp supports (>= 5.23, < 6).

transformers 5.24 renamed the KV-cache argument of the models' `forward` from `past_key_values` to
`cache` (the old name still works, with a deprecation warning, until 5.40), and `generate()` passes
it as `cache`. plphp reads it under either name and passes it under the one the model declares.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

#: The cache argument's names, newest first.
CACHE_ARGUMENTS: tuple[str, ...] = ("cache", "past_key_values")


def cache_argument(forward: Callable[..., Any]) -> str:
    """The keyword `forward` takes its KV cache by: `cache` from transformers 5.24, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def passed_cache(kwargs: Mapping[str, Any]) -> Any:
    """The cache in a forward call's keyword arguments, under either name (None when there is none)."""
    for name in CACHE_ARGUMENTS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def output_cache(output: Any) -> Any:
    """The cache a model's output returns (`cache` from 5.24, `past_key_values` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def prompt_position_ids(model: Any, inputs: Mapping[str, Any]) -> Any:
    """The position ids `generate()` gives the prompt `inputs` (`[B, L]`; `[3 or 4, B, L]` with M-RoPE).

    They come from the model's own `_prepare_position_ids_for_generation`, transformers' hook for
    models whose positions are not 0, 1, 2, ... (left padding, M-RoPE); a forward outside
    `generate()` that continues from a cache needs them, because such a model derives the
    continuation's positions from a mask as long as the prompt. None when the model has no such
    hook (it then infers its positions in `forward`).
    """
    prepare = getattr(model, "_prepare_position_ids_for_generation", None)
    if prepare is None:
        return None
    try:
        return prepare(inputs["input_ids"], dict(inputs))
    except (AttributeError, TypeError):  # a model that opts out of the hook
        return None
