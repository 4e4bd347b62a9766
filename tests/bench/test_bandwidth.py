"""The bandwidth model's arithmetic and the bytes it counts."""

from __future__ import annotations

import math

import pytest

from plphp.bench.bandwidth import floor_step_seconds, ideal_speedup, ideal_step_seconds, measure_bandwidth, predict
from plphp.bench.shapes import SHAPES, ModelShape, build_shape_model, decode_weight_bytes, get_shape, shape_config
from plphp.errors import ConfigError


def test_ideal_step_removes_the_time_to_read_the_saved_bytes():
    # 100 ms unpruned, 1 GB saved at 20 GB/s: 50 ms less
    assert ideal_step_seconds(0.1, 1e9, 20e9) == pytest.approx(0.05)
    assert ideal_speedup(0.1, 1e9, 20e9) == pytest.approx(2.0)
    assert ideal_speedup(0.1, 0, 20e9) == 1.0
    assert math.isinf(ideal_speedup(0.1, 4e9, 20e9))  # saved bytes alone take longer than the step


def test_the_floor_is_weights_plus_kv_over_bandwidth():
    assert floor_step_seconds(2e9, 1e9, 10e9) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        floor_step_seconds(1, 1, 0)


def test_predict_scales_kv_with_sequences_and_keeps_the_weights():
    row = predict(
        weight_bytes=10e9, kv_bytes_per_token=1e5, context_tokens=1000, sequences=8, kept_fraction=0.5, bandwidth=1e12
    )
    assert row["kv_bytes"] == 8e8 and row["kv_bytes_pruned"] == 4e8
    assert row["step_s"] == pytest.approx(10.8e9 / 1e12)
    assert row["step_s_pruned"] == pytest.approx(10.4e9 / 1e12)
    assert row["speedup"] == pytest.approx(10.8 / 10.4)
    assert row["tokens_per_s"] == pytest.approx(8 / row["step_s"])


def test_measured_bandwidth_is_positive_and_ordered():
    bandwidth = measure_bandwidth("cpu", megabytes=8, repeats=2)
    assert 0 < bandwidth.read_min <= bandwidth.read <= bandwidth.read_max
    assert bandwidth.copy > 0 and bandwidth.to_dict()["buffer_MB"] == 8


def test_shape_formula_counts_what_the_built_model_holds():
    model = build_shape_model("tiny-llava-onevision")
    config = model.config.get_text_config(decoder=True)
    shape = ModelShape(
        "t",
        "t",
        "llava_onevision",
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        vocab=config.vocab_size,
        tie_embeddings=False,
    )
    assert shape.decode_weight_bytes(4) == decode_weight_bytes(model)
    assert shape.kv_bytes_per_token(4) == 2 * config.num_hidden_layers * config.num_key_value_heads * shape.head_dim * 4


def test_named_shapes_carry_the_real_numbers():
    shape = SHAPES["llava-onevision-qwen2-0.5b"]
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.head_dim) == (24, 896, 14, 2, 64)
    # 0.5B: 24 layers x 2 KV heads x 64 x (K and V) x 4 bytes = 24 KiB per token in float32
    assert shape.kv_bytes_per_token(4) == 24 * 1024
    assert SHAPES["qwen2-vl-7b"].kv_bytes_per_token(2) == 2 * 28 * 4 * 128 * 2
    with pytest.raises(ConfigError, match="allowed: llava-onevision-qwen2-0.5b"):
        get_shape("llava-7b")


@pytest.mark.parametrize("name", list(SHAPES))
def test_named_shape_configs_have_the_real_widths(name):
    shape = SHAPES[name]
    config = shape_config(name, layers=1).get_text_config(decoder=True)
    widths = (config.hidden_size, config.intermediate_size, config.num_attention_heads, config.num_key_value_heads)
    assert widths == (shape.hidden, shape.intermediate, shape.heads, shape.kv_heads)
    assert config.num_hidden_layers == 1 and config.vocab_size == shape.vocab
