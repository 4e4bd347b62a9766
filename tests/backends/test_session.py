"""How `plphp.apply` behaves around the model: install, restore, errors, reports."""

from __future__ import annotations

import pytest
import torch

import plphp
from plphp.backends.inputs import chat_inputs
from plphp.errors import PlphpError, UnsupportedModelError
from plphp.models import build_tiny_model, build_tiny_processor, make_image


@pytest.fixture(scope="module")
def qwen():
    return build_tiny_model("qwen2_vl", seed=0), build_tiny_processor("qwen2_vl")


def _state(model):
    return (
        model.config._attn_implementation,
        model.config.get_text_config()._attn_implementation,
        model.config.vision_config._attn_implementation,
        len(model._forward_pre_hooks),
        len(model._forward_hooks),
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _same(a, b):
    return a[:5] == b[:5] and all(torch.equal(a[5][k], b[5][k]) for k in a[5])


def test_the_model_is_restored_exactly_on_exit_and_after_an_exception(qwen):
    model, processor = qwen
    inputs = chat_inputs(processor, [("what is this", [make_image(64, 64)])])
    before = _state(model)
    with plphp.apply(model, "plphp"):
        assert model.config.get_text_config()._attn_implementation.startswith("plphp_")
        assert model.config.vision_config._attn_implementation == before[2], "the vision tower is left alone"
        model.generate(**inputs, max_new_tokens=3)
    assert _same(_state(model), before)
    with pytest.raises(RuntimeError, match="boom"), plphp.apply(model, "plphp"):
        model.generate(**inputs, max_new_tokens=3)
        raise RuntimeError("boom")
    assert _same(_state(model), before)
    from transformers import AttentionInterface

    assert not [name for name in AttentionInterface._global_mapping if name.startswith("plphp_")]


def test_nested_sessions_are_refused(qwen):
    model, _ = qwen
    with plphp.apply(model, "plphp"), pytest.raises(PlphpError, match="already inside"), plphp.apply(model, "full"):
        pass


def test_unsupported_models_name_the_supported_architectures():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(
        Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=64,
        )
    )
    with pytest.raises(UnsupportedModelError) as info:
        plphp.apply(model, "plphp")
    message = str(info.value)
    assert "Qwen2ForCausalLM" in message
    for name in (
        "LlavaForConditionalGeneration",
        "LlavaOnevisionForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
    ):
        assert name in message


def test_a_prompt_without_vision_tokens_runs_unpruned_and_the_report_says_so(qwen):
    model, processor = qwen
    inputs = chat_inputs(processor, [("no picture here", [])])
    with torch.inference_mode():
        plain = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        with plphp.apply(model, "plphp") as session:
            pruned = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(plain, pruned)
    assert "no vision tokens" in session.report.note
    assert session.report.layers == [] and session.report.vision_kv_reduction == 0.0


def test_the_report_has_a_row_per_layer_and_serialises(qwen):
    model, processor = qwen
    inputs = chat_inputs(processor, [("what is this", [make_image(96, 64)])])
    with plphp.apply(model, "plphp", record_scores=True) as session, torch.inference_mode():
        model.generate(**inputs, max_new_tokens=3)
        model.generate(**inputs, max_new_tokens=3)
    assert len(session.reports) == 2, "one report per prefill"
    report = session.report
    assert [layer.layer_idx for layer in report.layers] == list(range(model.config.get_text_config().num_hidden_layers))
    pruned = [layer for layer in report.layers if layer.pruned]
    assert pruned and all(layer.scores is not None for layer in pruned)
    data = report.to_dict()
    assert data["kv_bytes_after"] < data["kv_bytes_before"]
    import json

    json.dumps(data)
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(report.table())
    assert "vision KV removed" in console.export_text()


def test_mask_mode_keeps_every_entry(qwen):
    model, processor = qwen
    inputs = chat_inputs(processor, [("what is this", [make_image(96, 64)])])
    with plphp.apply(model, "plphp", materialize="mask") as session, torch.inference_mode():
        model(**inputs, use_cache=True)
    assert session.report.kv_bytes_after == session.report.kv_bytes_before
    with pytest.raises(plphp.ConfigError, match="materialize"):
        plphp.apply(model, "plphp", materialize="drop")


def test_policy_overrides_pass_through_apply(qwen):
    model, processor = qwen
    inputs = chat_inputs(processor, [("what is this", [make_image(96, 64)])])
    overrides = {"start_layer": 0, "allocator": {"name": "uniform", "retention": 0.25}}
    with plphp.apply(model, "plphp", **overrides) as session, torch.inference_mode():
        model(**inputs, use_cache=True)
    assert all(layer.pruned for layer in session.report.layers)
    num_vision = session.report.num_vision[0]
    assert all(layer.budget == [-(-num_vision // 4)] for layer in session.report.layers)


def test_a_static_cache_is_refused_with_a_clear_message(qwen):
    model, processor = qwen
    inputs = chat_inputs(processor, [("what is this", [make_image(64, 64)])])
    with pytest.raises(PlphpError, match="StaticCache"), plphp.apply(model, "plphp"):
        model.generate(**inputs, max_new_tokens=2, cache_implementation="static")


@pytest.mark.parametrize("policy", [{"preset": "plphp", "start_layer": 0}, {"preset": "fastv", "start_layer": 1}])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_half_precision_models_prune_and_generate(attn, policy):
    model = build_tiny_model("qwen2_vl", dtype=torch.bfloat16, attn_implementation=attn)
    processor = build_tiny_processor("qwen2_vl")
    inputs = chat_inputs(processor, [("compare", [make_image(64, 96), make_image(96, 64)]), ("what", [])])
    with plphp.apply(model, policy) as session, torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=4, num_beams=2)
    assert out.shape[0] == 2
    assert session.report.kv_bytes_after < session.report.kv_bytes_before
    layer = session.report.layers[0]
    rows = session.report.batch_size  # 2 samples x 2 beams
    assert rows == 4 and layer.kv_bytes_before == 2 * rows * 2 * inputs["input_ids"].shape[1] * 16 * 2  # bf16: 2 bytes


def test_a_prefill_driven_by_hand_compresses_a_cache_filled_by_the_caller():
    """`begin_prefill` / `record_stats` / `end_prefill`: the seam the benchmark's synthetic prefill uses."""
    from transformers.cache_utils import DynamicCache

    from plphp.testing import tiny_vlm

    vlm = tiny_vlm("llava_onevision")
    model, input_ids = vlm.model, vlm.inputs["batch1"]["input_ids"]
    config = model.config.get_text_config()
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    cache = DynamicCache(config=model.config)
    with plphp.apply(model, "plphp", start_layer=0) as session:
        prompt = session.begin_prefill(cache, input_ids, torch.ones_like(input_ids))
        assert prompt is not None and int(prompt.num_vision[0]) > 0
        for idx in range(config.num_hidden_layers):
            shape = (1, kv_heads, input_ids.shape[1], head_dim)
            cache.layers[idx].update(torch.randn(shape), torch.randn(shape))
            query = torch.randn(1, heads, input_ids.shape[1], head_dim)
            session.record_stats(idx, query, cache.layers[idx].keys, head_dim**-0.5)
        report = session.end_prefill()
    assert report is session.report and all(layer.pruned for layer in report.layers)
    assert cache.layers[0].keys.shape[-2] < input_ids.shape[1]
    assert report.kv_bytes_after < report.kv_bytes_before
