"""Synthetic vision for text-only models (a plugin registered for a `with` block) and the session timers."""

from __future__ import annotations

import pytest
import torch

import plphp
from plphp.bench.prefill import timed_prefill
from plphp.bench.synthetic import SyntheticVision, SyntheticVisionAdapter, qwen2_text_model, vision_prompt
from plphp.bench.timing import CompressTimer, PrefillTimer
from plphp.errors import ConfigError, UnsupportedModelError
from plphp.registry import get_registry


@pytest.fixture(scope="module")
def model():
    return qwen2_text_model(layers=2, vocab=256)


def test_the_adapter_exists_only_inside_the_block_with_its_own_vision_id(model):
    with pytest.raises(UnsupportedModelError):
        get_registry().adapter_for(model)
    for token_id in (255, 7):
        with SyntheticVision(vision_token_id=token_id) as plugin:
            adapter = get_registry().adapter_for(model)
            assert isinstance(adapter, SyntheticVisionAdapter) and adapter.vision_token_ids() == [token_id]
            assert plugin.adapter in get_registry().adapters()
        assert SyntheticVisionAdapter.architectures == ("Qwen2ForCausalLM",)
    with pytest.raises(UnsupportedModelError):
        get_registry().adapter_for(model)
    assert SyntheticVisionAdapter(model, 3).vision_token_ids() == [3]


def test_two_synthetic_visions_at_once_are_refused(model):
    with SyntheticVision(255), pytest.raises(ConfigError, match="synthetic_vision"), SyntheticVision(7):
        pass
    with pytest.raises(UnsupportedModelError):
        get_registry().adapter_for(model)


def test_the_prompt_holds_the_vision_blocks_between_text():
    ids = vision_prompt(100, 0.5, vision_token_id=255, images=2)
    vision = ids[0] == 255
    assert ids.shape == (1, 100) and int(vision.sum()) == 50 and int(ids.max()) == 255
    starts = (vision[1:] & ~vision[:-1]).nonzero().flatten().tolist()
    assert len(starts) == 2 and not vision[:10].any() and not vision[-10:].any()
    with pytest.raises(ConfigError, match="too few text tokens"):
        vision_prompt(10, 0.95, vision_token_id=255)


def test_the_timers_see_each_part_of_a_prefill_through_the_session_events(model):
    ids = vision_prompt(64, 0.75, vision_token_id=255)
    prefill, compress = PrefillTimer(), CompressTimer("cpu")
    with SyntheticVision(255), torch.inference_mode():
        with plphp.apply(model, "plphp", start_layer=1, observers=[prefill, compress]) as session:
            model(ids, use_cache=True)
        parts = timed_prefill(model, ids, plphp.load_policy("plphp", start_layer=1), parts=True)
    assert session.report.vision_kv_reduction > 0
    assert prefill.collect_calls == 2 and prefill.setup_s > 0 and prefill.collect_s > 0
    assert prefill.compress_s > 0 and compress.compress_s > 0
    assert parts["collect_calls"] == 2 and parts["pruned_layers"] == 1
    assert parts["accounted_s"] == pytest.approx(
        sum(parts[k] for k in ("apply_s", "enter_exit_s", "setup_s", "collect_s", "compress_s"))
    )
    assert parts["seconds"] >= parts["forward_s"] > 0
