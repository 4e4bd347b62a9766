"""The cache argument under both of its names (transformers 5.23: past_key_values; 5.24 on: cache)."""

from __future__ import annotations

from types import SimpleNamespace

from plphp.backends.compat import cache_argument, output_cache, passed_cache
from plphp.models import build_tiny_model


def test_cache_argument_follows_the_signature():
    def new(input_ids=None, cache=None, **kwargs): ...

    def old(input_ids=None, past_key_values=None, **kwargs): ...

    assert cache_argument(new) == "cache" and cache_argument(old) == "past_key_values"
    # the installed transformers: whichever name its models declare, it is one of the two
    assert cache_argument(build_tiny_model("llava").forward) in ("cache", "past_key_values")


def test_passed_and_returned_caches_are_found_under_either_name():
    cache = object()
    assert passed_cache({"cache": cache}) is cache
    assert passed_cache({"past_key_values": cache, "cache": None}) is cache
    assert passed_cache({"use_cache": True}) is None
    assert output_cache(SimpleNamespace(cache=cache, past_key_values=cache)) is cache
    assert output_cache(SimpleNamespace(past_key_values=cache)) is cache
