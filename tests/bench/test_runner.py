"""The measurement loop on tiny models: every variant runs, bytes agree with the report and its formula."""

from __future__ import annotations

import pytest
import torch

import plphp
from plphp.bench.bandwidth import measure_bandwidth
from plphp.bench.runs import run_benchmark
from plphp.bench.shapes import build_shape_model, decode_weight_bytes
from plphp.bench.summary import summary
from plphp.bench.workload import UNPRUNED, Variant, Workload, build_input_ids
from plphp.errors import ConfigError


@pytest.fixture(scope="module")
def bandwidth():
    return measure_bandwidth("cpu", megabytes=8, repeats=1)


def _variants():
    return [
        Variant(UNPRUNED),
        Variant("full", plphp.load_policy("full")),
        Variant("plphp", plphp.load_policy("plphp", start_layer=1)),
    ]


@pytest.mark.parametrize(
    ("name", "prefill", "interleave"),
    [("tiny-llava-onevision", "synthetic", "runs"), ("tiny-qwen2-vl", "real", "steps")],
)
def test_every_variant_runs_interleaved_and_bytes_match_the_report(name, prefill, interleave, bandwidth):
    model = build_shape_model(name)
    workload = Workload(batch=2, vision_tokens=30, text_tokens=6, images=2, new_tokens=3)
    seen = []
    result = run_benchmark(
        model,
        _variants(),
        workload,
        prefill=prefill,
        rounds=2,
        bandwidth=bandwidth,
        setup={},
        interleave=interleave,
        progress=seen.append,
    )
    assert seen[:3] == ["warm-up unpruned", "warm-up full", "warm-up plphp"]
    if interleave == "runs":
        assert seen[3:] == [f"round 1/2: {v}" for v in ("unpruned", "full", "plphp")] + [
            f"round 2/2: {v}" for v in ("plphp", "full", "unpruned")
        ]
    else:
        assert seen[3:] == ["round 1/2: steps of all variants", "round 2/2: steps of all variants"]
        assert all(run.peak_decode is None for run in result.runs)
        assert all(run.peak_decode is not None for run in result.warmups)
    rows = {row["label"]: row for row in summary(result, decode_weight_bytes(model))}
    assert all(len(result.runs_of(label)) == 2 for label in rows)
    assert all(len(run.steps_s) == 3 for run in result.runs)
    full, pruned, unpruned = rows["full"], rows["plphp"], rows[UNPRUNED]
    assert full["kv_bytes"] == unpruned["kv_bytes"] > pruned["kv_bytes"]
    for row in (full, pruned):
        assert row["kv_bytes_match_report"] and row["kv_bytes_match_formula"]
        assert row["compress_s"]["median"] > 0
    assert pruned["kv_saved_bytes"] == unpruned["kv_bytes"] - pruned["kv_bytes"]
    assert pruned["ideal_speedup"] > 1.0 and full["ideal_speedup"] == 1.0
    assert pruned["peak_decode"] is not None and "peak_decode_saved" in pruned
    assert len([r for r in result.runs if r.label == "plphp"][0].steps_s) == 3
    assert (unpruned["prefill_s"] is None) == (prefill == "synthetic")
    if prefill == "real":
        assert unpruned["ttft_s"]["median"] >= unpruned["prefill_s"]["median"]


def test_input_ids_hold_the_vision_blocks_between_text(bandwidth):
    model = build_shape_model("tiny-llava-onevision")
    from plphp.registry import get_registry

    adapter = get_registry().adapter_for(model)
    workload = Workload(batch=3, vision_tokens=10, text_tokens=4, images=3, new_tokens=1)
    ids = build_input_ids(model, adapter, workload)
    assert ids.shape == (3, workload.prompt_length) == (3, 16)
    vision = adapter.vision_mask(ids)
    assert (vision.sum(-1) == 10).all()
    assert [int(s.max()) + 1 for s in adapter.segment_ids(ids, vision)] == [3, 3, 3]


def test_the_formula_counts_text_plus_the_longest_row_of_kept_vision():
    model = build_shape_model("tiny-llava-onevision")
    from plphp.registry import get_registry

    adapter = get_registry().adapter_for(model)
    batch = build_input_ids(model, adapter, Workload(batch=2, vision_tokens=20, text_tokens=5, new_tokens=1))
    with plphp.apply(model, "plphp", start_layer=1) as session, torch.inference_mode():
        model(input_ids=batch, use_cache=True)
    report = session.report
    assert report.kv_bytes_formula() == report.kv_bytes_after
    budget = report.layers[1].budget[0]
    per_slot = 2 * 2 * 2 * 16 * 4  # K and V, batch 2, 2 KV heads, head_dim 16, float32
    assert report.layers[1].kv_bytes_after == per_slot * (5 + budget)


@pytest.mark.parametrize(
    ("field", "kwargs", "message"),
    [
        ("batch", {"batch": 0}, "batch: 0 is not allowed; it must be >= 1"),
        ("new", {"new_tokens": 0}, "new-tokens: 0 is not allowed"),
        ("text", {"text_tokens": 1}, "text-tokens: 1 is not allowed; it must be >= 2"),
        ("images", {"images": 5, "vision_tokens": 4}, "images: 5 is more than the 4 vision tokens"),
    ],
)
def test_bad_workloads_name_the_option(field, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Workload(**kwargs)


def test_prefill_stage_policies_need_a_real_prefill(bandwidth):
    model = build_shape_model("tiny-llava-onevision")
    variants = [Variant(UNPRUNED), Variant("fastv", plphp.load_policy("fastv"))]
    with pytest.raises(ConfigError, match="policy 'fastv' acts in stage 'prefill'.*use --prefill real"):
        run_benchmark(
            model,
            variants,
            Workload(batch=1, vision_tokens=8, text_tokens=4, new_tokens=1),
            prefill="synthetic",
            rounds=1,
            bandwidth=bandwidth,
            setup={},
        )


def test_the_formula_counts_the_padding_of_head_adaptive_budgets():
    model = build_shape_model("tiny-llava-onevision")
    from plphp.registry import get_registry

    adapter = get_registry().adapter_for(model)
    batch = build_input_ids(model, adapter, Workload(batch=2, vision_tokens=20, text_tokens=5, new_tokens=1))
    with plphp.apply(model, "adakv") as session, torch.inference_mode():
        model(input_ids=batch, use_cache=True)
    report = session.report
    assert any(bool((layer.kept != layer.kept[:, :1]).any()) for layer in report.layers), "heads kept equal counts"
    assert report.kv_bytes_formula() == report.kv_bytes_after


def test_attention_calls_are_timed_per_layer_group_and_full_fast_is_the_kernel_baseline(bandwidth):
    from plphp.bench.workload import FULL_FAST

    model = build_shape_model("tiny-llava-onevision")
    layers = model.config.text_config.num_hidden_layers
    variants = [
        Variant(UNPRUNED),
        Variant(FULL_FAST, plphp.load_policy("full"), decode_attention="all"),
        Variant("plphp", plphp.load_policy("plphp", start_layer=1)),
    ]
    workload = Workload(batch=2, vision_tokens=30, text_tokens=6, new_tokens=3)
    result = run_benchmark(model, variants, workload, prefill="synthetic", rounds=1, bandwidth=bandwidth, setup={})
    (unpruned,) = result.runs_of(UNPRUNED)
    (fast,) = result.runs_of(FULL_FAST)
    (pruned,) = result.runs_of("plphp")
    assert unpruned.attention is None
    assert set(fast.attention) == {"other"} and fast.attention["other"]["calls"] == layers * 3
    pruned_layers = pruned.report["pruned_layers"]
    assert pruned.attention["pruned"]["calls"] == pruned_layers * 3
    assert pruned.attention["other"]["calls"] == (layers - pruned_layers) * 3
    # the bytes are the K/V of the cache each call attends over
    assert pruned.attention["pruned"]["bytes"] < fast.attention["other"]["bytes"] * pruned_layers / layers
    rows = {row["label"]: row for row in summary(result, decode_weight_bytes(model))}
    saved = rows[FULL_FAST]["kv_bytes"] - rows["plphp"]["kv_bytes"]
    expected_ideal = rows[FULL_FAST]["step_s"]["median"] / (
        rows[FULL_FAST]["step_s"]["median"] - saved / bandwidth.read
    )
    assert rows["plphp"]["ideal_speedup_vs_full_fast"] == pytest.approx(expected_ideal)
    assert 0 < rows["plphp"]["attention_share_of_step"] < 1
