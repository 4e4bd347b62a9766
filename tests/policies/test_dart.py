"""DART (`duplication` collector, `dart` preset): its tensor math against naive loops, and its path
through a model: hidden states after the final norm, sdpa throughout, no softmax map, a flash-style
kernel (2-D padding masks only), the benchmark."""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import plphp
from plphp.backends import attention
from plphp.contract import check_keep_indices
from plphp.errors import ConfigError
from plphp.ops import budget_per_sample, kept_count
from plphp.policies.duplication import Duplication
from plphp.policies.shared_topk import SharedTopK
from plphp.policy import load_policy
from plphp.registry import get_registry
from plphp.testing import tiny_vlm
from tests.policies.strategies import prompts

rates = st.floats(0.0, 1.0, allow_nan=False)


def _tensors(prompt, seed, width=6):
    generator = torch.Generator().manual_seed(seed)
    key = torch.randn(prompt.batch_size, prompt.num_kv_heads, prompt.length, prompt.head_dim, generator=generator)
    hidden = torch.randn(prompt.batch_size, prompt.length, width, generator=generator)
    return key, hidden


def _naive_order(key, features, prompt, b, segment, pivots, text_pivots):
    """Image pivots by key L1 norm, then round robin: round m gives each pivot its m-th least similar token."""
    norm = {p: float(key[b, :, p, :].abs().sum()) for p in range(prompt.length)}
    vision = set(torch.nonzero(prompt.vision_mask[b]).flatten().tolist())
    last_vision = max(vision, default=-1)
    question = [p for p in range(last_vision + 1, prompt.length) if prompt.key_valid[b, p]]
    if not question and prompt.key_valid[b, -1] and prompt.length - 1 not in vision:
        question = [prompt.length - 1]
    image = sorted(segment, key=lambda p: (-norm[p], p))[:pivots]
    texts = sorted(question, key=lambda p: (-norm[p], p))[:text_pivots]

    def cosine(a, c):
        return float(torch.nn.functional.cosine_similarity(features[b, a], features[b, c], dim=0))

    others = [p for p in segment if p not in image]
    lists = [sorted(others, key=lambda p, q=q: (cosine(q, p), p)) for q in image + texts]
    order = []
    for m in range(len(others)):
        for listed in lists:
            if listed[m] not in order:
                order.append(listed[m])
    return image, order, lists


@settings(max_examples=60, deadline=None)
@given(prompts(), st.integers(0, 10_000), rates, st.integers(1, 4), st.integers(0, 3), st.booleans())
def test_dart_keeps_the_pivots_then_the_least_similar_tokens_of_each_pivot(
    prompt, seed, rate, pivots, text_pivots, on_keys
):
    key, hidden = _tensors(prompt, seed)
    collector = Duplication(pivots=pivots, text_pivots=text_pivots, similarity="keys" if on_keys else "hidden_states")
    stats = collector.collect(None, key, prompt, 1, 1.0, hidden_states=hidden)
    features = key.transpose(1, 2).flatten(2) if on_keys else hidden  # [B, L, H_kv·D] or [B, L, D]
    assert torch.equal(stats.scores, stats.scores[:, :1].expand_as(stats.scores))  # one ranking for every head
    assert torch.isnan(stats.vision_attention).all()
    retention = torch.full((prompt.batch_size,), rate)
    keep = SharedTopK().select(stats, retention, prompt, 2)
    # exact per-image budgets, vision positions only (text is never chosen), one set for all heads
    check_keep_indices(keep, prompt, budget_per_sample(retention, prompt), "dart")
    for b in range(prompt.batch_size):
        kept = set(keep[b, 0][keep[b, 0] >= 0].tolist())
        for segment in prompt.segments(b):
            segment = segment.tolist()
            image, order, lists = _naive_order(key, features, prompt, b, segment, pivots, text_pivots)
            budget = kept_count(rate, len(segment))
            expected = image[:budget] + order[: max(0, budget - len(image))]
            assert kept & set(segment) == set(expected)
            # every kept non-pivot token comes as early in some pivot's least-similar list as any dropped one
            first_round = {p: min(listed.index(p) for listed in lists) for p in order}
            kept_rounds = [first_round[p] for p in order if p in kept]
            dropped_rounds = [first_round[p] for p in order if p not in kept]
            if kept_rounds and dropped_rounds:
                assert max(kept_rounds) <= min(dropped_rounds)


@given(prompts(), st.integers(0, 10_000), st.sampled_from(["l1", "l2"]))
def test_dart_pivots_are_each_images_keys_of_largest_norm(prompt, seed, norm):
    key, hidden = _tensors(prompt, seed)
    stats = Duplication(pivots=3, key_norm=norm).collect(None, key, prompt, 0, 1.0, hidden_states=hidden)
    flat = key.transpose(1, 2).flatten(2)  # every head's key of a token, concatenated
    norms = flat.abs().sum(-1) if norm == "l1" else flat.norm(dim=-1)
    for b in range(prompt.batch_size):
        for segment in prompt.segments(b):
            count = min(3, len(segment))
            by_score = segment[stats.scores[b, 0, segment].argsort(descending=True)[:count]]
            by_norm = segment[norms[b, segment].argsort(descending=True)[:count]]
            assert torch.equal(by_score, by_norm)


def test_dart_keeps_the_pivot_and_the_tokens_least_like_it():
    # One image of 7 tokens, one pivot (token 4 has the largest key) and no text pivot: keeping 3
    # keeps the pivot and the two tokens least similar to it.
    from plphp.testing import random_prompt

    prompt = random_prompt(batch=1, length=10, images=[[(1, 7)]], padding=[0], num_heads=2, num_kv_heads=1)
    key = torch.zeros(1, 1, 10, 8)
    key[0, 0, 1:8, 0] = torch.tensor([1.0, 2.0, 1.0, 9.0, 1.0, 1.0, 1.0])
    angles = torch.tensor([0.0, 0.1, 3.0, 0.2, 0.0, 0.3, 2.5, 0.1, 0.0, 0.0])
    hidden = torch.stack([angles.cos(), angles.sin()], -1)[None]  # the pivot (position 4) at angle 0
    stats = Duplication(pivots=1, text_pivots=0).collect(None, key, prompt, 0, 1.0, hidden_states=hidden)
    keep = SharedTopK().select(stats, torch.tensor([3 / 7]), prompt, 1)
    assert keep[0, 0].tolist() == [2, 4, 6]


def test_dart_preset_and_bad_parameters():
    policy = load_policy("dart")
    assert (policy.stage, policy.start_layer, policy.collector.name) == ("prefill", 2, "duplication")
    assert "duplication" in get_registry().components("collector")
    with pytest.raises(ConfigError, match="pivots"):
        load_policy({"preset": "dart", "collector": {"pivots": 0}})
    with pytest.raises(ConfigError, match="key_norm"):
        load_policy({"preset": "dart", "collector": {"key_norm": "l3"}})
    with pytest.raises(ConfigError, match="vision attention"):
        load_policy({"preset": "dart", "allocator": {"name": "vision_tiers"}})


def test_the_collector_reads_each_layers_output_after_the_final_norm(monkeypatch):
    vlm = tiny_vlm("llava_onevision")
    model, inputs = vlm.model, vlm.inputs["batch3"]
    seen = {}
    collect = Duplication.collect

    def recording(self, query, key, prompt, layer_idx, scaling, *, hidden_states):
        seen[layer_idx] = (hidden_states.clone(), prompt.length)
        return collect(self, query, key, prompt, layer_idx, scaling, hidden_states=hidden_states)

    monkeypatch.setattr(Duplication, "collect", recording)
    with torch.inference_mode():
        plain = model(**inputs, output_hidden_states=True)
        with plphp.apply(model, "dart"):
            model(**inputs, use_cache=True)
    norm = model.get_decoder().norm
    length = inputs["input_ids"].shape[1]
    for layer in (0, 1):  # up to layer K - 1 = 1 the sequence is whole: the plain run's states, normed
        assert torch.equal(seen[layer][0], norm(plain.hidden_states[layer + 1]))
    assert all(seen[layer][1] < length for layer in seen if layer >= 2)  # later layers see the shrunk sequence


def _refuse(*args, **kwargs):
    raise AssertionError("eager attention was called")


def test_dart_runs_on_sdpa_with_no_eager_attention_and_no_softmax(monkeypatch):
    vlm = tiny_vlm("qwen2_vl")
    model = vlm.model
    model.set_attn_implementation({"text_config": "sdpa"})

    monkeypatch.setattr(attention, "eager_attention", _refuse)
    monkeypatch.setattr(sys.modules[type(model.get_decoder()).__module__], "eager_attention_forward", _refuse)
    sdpa, layers = ALL_ATTENTION_FUNCTIONS["sdpa"], []

    def counting_sdpa(module, *args, **kwargs):
        layers.append(getattr(module, "layer_idx", None))
        return sdpa(module, *args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", counting_sdpa)

    class Softmaxes(torch.overrides.TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax, torch.log_softmax):
                Softmaxes.calls += 1
            return func(*args, **(kwargs or {}))

    text_config = model.config.get_text_config(decoder=True)
    # decode_attention="model": the grouped decode kernel of pruned layers computes its own softmax
    # over the cache (that is attention, not statistics); DART's claim is about choosing tokens.
    with torch.inference_mode(), plphp.apply(model, "dart", decode_attention="model") as session, Softmaxes():
        wrapped = text_config._attn_implementation
        model.generate(**vlm.inputs["batch3"], do_sample=False, max_new_tokens=3, min_new_tokens=3)
    assert wrapped.startswith("plphp_") and text_config._attn_implementation == "sdpa"
    assert Softmaxes.calls == 0, "a softmax was computed: DART needs no attention weights"
    decoder_layers = text_config.num_hidden_layers
    assert set(layers) >= set(range(decoder_layers)) and layers.count(decoder_layers - 1) == 3
    assert any(layer.pruned for layer in session.report.layers)


@pytest.mark.parametrize(("prefill", "stage"), [("real", "prefill"), ("synthetic", "decode")])
def test_dart_runs_in_the_benchmark(prefill, stage):
    from plphp.bench.bandwidth import measure_bandwidth
    from plphp.bench.runs import run_benchmark
    from plphp.bench.shapes import build_shape_model
    from plphp.bench.workload import UNPRUNED, Variant, Workload

    policy = load_policy({"preset": "dart", "stage": stage})
    result = run_benchmark(
        build_shape_model("tiny-llava-onevision"),
        [Variant(UNPRUNED), Variant("dart", policy)],
        Workload(batch=2, vision_tokens=30, text_tokens=6, images=2, new_tokens=2),
        prefill=prefill,
        rounds=1,
        bandwidth=measure_bandwidth("cpu", megabytes=8, repeats=1),
        setup={},
    )
    (run,) = result.runs_of("dart")
    assert f"stage={stage}" in run.report["policy"] and run.report["pruned_layers"] > 0
    assert run.kv_bytes == run.report["kv_bytes_after"] == run.report["kv_bytes_formula"]
    assert run.kv_bytes < result.runs_of(UNPRUNED)[0].kv_bytes


def _flash_like(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Stands in for a flash kernel on the CPU: it takes a 2-D padding mask or none, never a dense one."""
    if attention_mask is not None and attention_mask.dim() != 2:
        raise AssertionError(f"a flash kernel was handed a {attention_mask.dim()}-D mask")
    q_len, kv_len = query.shape[2], key.shape[2]
    rows = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
    mask = (torch.arange(kv_len, device=query.device) <= rows)[None, None]  # causal, [1, 1, q, kv]
    if attention_mask is not None:  # padded keys are masked; a padded query still sees itself
        mask = (mask & attention_mask[:, None, None, -kv_len:].bool()) | (torch.arange(kv_len) == rows)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, mask, scaling=scaling, dropout=dropout)


def test_dart_under_a_flash_style_kernel_equals_the_masked_reference_and_sdpa(monkeypatch):
    monkeypatch.setitem(AttentionInterface._global_mapping, "flash_like", _flash_like)
    monkeypatch.setitem(
        AttentionMaskInterface._global_mapping, "flash_like", ALL_MASK_ATTENTION_FUNCTIONS["flash_attention_2"]
    )
    monkeypatch.setattr(attention, "eager_attention", _refuse)
    vlm = tiny_vlm("qwen2_vl")
    runs = {}
    for implementation, materialize in (("flash_like", "prune"), ("flash_like", "mask"), ("sdpa", "prune")):
        vlm.model.set_attn_implementation({"text_config": implementation})
        try:
            with torch.inference_mode(), plphp.apply(vlm.model, "dart", materialize=materialize) as session:
                out = vlm.model.generate(
                    **vlm.inputs["batch3"],
                    do_sample=False,
                    max_new_tokens=4,
                    min_new_tokens=4,
                    output_logits=True,
                    return_dict_in_generate=True,
                )
        finally:
            vlm.model.set_attn_implementation({"text_config": "sdpa"})
        runs[implementation, materialize] = out, session.report
    (pruned, report), (masked, _), (sdpa, sdpa_report) = runs.values()
    assert torch.equal(pruned.sequences, masked.sequences)
    for a, b in zip(pruned.logits, masked.logits):
        torch.testing.assert_close(a, b, atol=3e-5, rtol=0)
    for mine, other in zip(report.layers, sdpa_report.layers):
        assert mine.pruned == other.pruned
        if mine.pruned:
            assert torch.equal(mine.kept_positions, other.kept_positions)  # the same keep-set as under sdpa
    assert torch.equal(pruned.sequences, sdpa.sequences)


def test_a_model_without_a_final_norm_is_refused_by_name(monkeypatch):
    from plphp.errors import UnsupportedModelError

    vlm = tiny_vlm("llava")
    monkeypatch.delattr(vlm.model.get_decoder(), "norm")
    with pytest.raises(UnsupportedModelError, match="no final norm"), plphp.apply(vlm.model, "dart"):
        pass
    with plphp.apply(vlm.model, "fastv"):  # collectors that read no hidden states do not need it
        pass
