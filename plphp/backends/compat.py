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
