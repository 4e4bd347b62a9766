"""The grouped one-query decode kernel (plphp.backends.decode_attention) and its use by the session.

The kernel is checked against a naive reference (repeat_kv, masked softmax in float64) across
dtypes, group sizes, per-sample and per-head validity, rows padded at the front and holes; the
session is checked to route pruned layers through it, to leave unpruned layers on the model's own
attention, and to give the same tokens as the model's attention when every layer goes through it.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import plphp
from plphp.backends import session as session_module
from plphp.backends.cache import PrunableLayer
from plphp.backends.decode_attention import grouped_decode_attention, invalid_span
from plphp.errors import ConfigError
from plphp.testing import tiny_vlm

#: Largest absolute difference from the float64 reference, per dtype (outputs are O(1)).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def naive_attention(query, key, value, scaling, valid):
    """repeat_kv, then a masked softmax, all in float64: `[B, 1, H, D]`."""
    groups = query.shape[1] // key.shape[1]
    key = key.double().repeat_interleave(groups, dim=1)
    value = value.double().repeat_interleave(groups, dim=1)
    logits = (query.double() @ key.transpose(2, 3)) * scaling  # [B, H, 1, L]
    if valid is not None:
        visible = valid.repeat_interleave(groups, dim=1) if valid.shape[1] > 1 else valid
        logits = logits.masked_fill(~visible[:, :, None, :], float("-inf"))
    return (torch.softmax(logits, dim=-1) @ value).transpose(1, 2)


@st.composite
def cases(draw):
    batch = draw(st.integers(1, 3))
    kv_heads = draw(st.sampled_from([1, 2, 3]))
    group = draw(st.sampled_from([1, 2, 4, 7]))
    length = draw(st.integers(1, 48))
    head_dim = draw(st.sampled_from([4, 8, 16]))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    kind = draw(st.sampled_from(["none", "front", "holes"]))
    per_head = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return batch, kv_heads, group, length, head_dim, dtype, kind, per_head, seed


def _valid(kind, batch, rows, length, generator):
    """`[B, rows, L]`: None, front padding (some rows padded all but their last slot), or holes."""
    if kind == "none":
        return None
    if kind == "front":
        pad = torch.randint(0, length, (batch, rows), generator=generator)  # up to L-1: all but the last
        valid = torch.arange(length)[None, None, :] >= pad[..., None]
    else:
        valid = torch.rand(batch, rows, length, generator=generator) < 0.6
    valid[..., -1] = True  # the new token is always visible
    return valid


@settings(max_examples=150, deadline=None)
@given(cases())
def test_grouped_kernel_equals_repeat_kv_and_masked_softmax(case):
    batch, kv_heads, group, length, head_dim, dtype, kind, per_head, seed = case
    generator = torch.Generator().manual_seed(seed)
    heads = kv_heads * group
    query = torch.randn(batch, heads, 1, head_dim, generator=generator).to(dtype)
    # keys and values as the cache holds them: the first `length` slots of a larger buffer
    keys = torch.randn(batch, kv_heads, length + 5, head_dim, generator=generator).to(dtype)[:, :, :length]
    values = torch.randn(batch, kv_heads, length + 5, head_dim, generator=generator).to(dtype)[:, :, :length]
    valid = _valid(kind, batch, kv_heads if per_head else 1, length, generator)
    scaling = head_dim**-0.5
    expected = naive_attention(query, keys, values, scaling, valid)
    for span in (None, invalid_span(valid)):
        output = grouped_decode_attention(query, keys, values, scaling, valid, span)
        assert output.shape == (batch, 1, heads, head_dim) and output.dtype == dtype
        assert torch.isfinite(output).all()
        assert (output.double() - expected).abs().max() <= TOLERANCE[dtype]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 30), st.integers(0, 2**16), st.floats(0.0, 1.0))
def test_invalid_span_bounds_every_invalid_slot(batch, rows, length, seed, density):
    generator = torch.Generator().manual_seed(seed)
    valid = torch.rand(batch, rows, length, generator=generator) >= density * 0.3
    span = invalid_span(valid)
    columns = (~valid).any(0).any(0)
    if not columns.any():
        assert span is None
        return
    lo, hi = span
    assert columns[lo] and columns[hi - 1] and not columns[:lo].any() and not columns[hi:].any()


def test_the_layers_invalid_span_follows_compression_decoding_and_reordering():
    generator = torch.Generator().manual_seed(0)
    layer = PrunableLayer()
    keys = torch.randn(2, 2, 10, 4, generator=generator)
    layer.update(keys, keys)
    assert layer.invalid_span is None
    positions = torch.arange(6).expand(2, 2, 6).contiguous()
    slot_valid = torch.ones(2, 2, 6, dtype=torch.bool)
    slot_valid[1, :, 4:] = False  # sample 1 keeps 4 of 6 slots
    layer.compress(positions, slot_valid)
    assert layer.invalid_span == (4, 6)
    new = torch.randn(2, 2, 1, 4, generator=generator)
    for _ in range(3):
        layer.update(new, new)
    assert layer.invalid_span == (4, 6) and layer.length == 9
    layer.reorder_cache(torch.tensor([0, 0]))  # sample 1's short row is gone
    assert layer.invalid_span is None
    layer.crop(-3)
    assert layer.invalid_span is None and layer.length == 6


@pytest.fixture(scope="module")
def onevision():
    vlm = tiny_vlm("llava_onevision")
    return vlm.model, vlm.inputs["batch3"]  # left padding, 2, 1 and 0 images


def _generate(model, inputs, policy=None, **options):
    with torch.inference_mode():
        if policy is None:
            return model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        with plphp.apply(model, policy, **options):
            return model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)


class _Calls:
    """Counts the calls of the grouped kernel, which it then runs."""

    def __init__(self):
        self.count = 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        return grouped_decode_attention(*args, **kwargs)


def test_pruned_layers_decode_through_the_grouped_kernel_and_unpruned_ones_do_not(onevision, monkeypatch):
    model, inputs = onevision
    calls = _Calls()
    monkeypatch.setattr(session_module, "grouped_decode_attention", calls)
    _generate(model, inputs, "full")
    assert calls.count == 0, "full keeps the model's attention (bit-identical to plain generate)"
    with torch.inference_mode(), plphp.apply(model, "plphp") as session:
        model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    pruned = sum(layer.pruned for layer in session.report.layers)
    assert pruned and calls.count == pruned * 4  # 4 decoding steps after the first token
    calls.count = 0
    _generate(model, inputs, "plphp", decode_attention="model")
    assert calls.count == 0
    _generate(model, inputs, "full", decode_attention="all")
    assert calls.count == model.config.text_config.num_hidden_layers * 4


def test_every_layer_through_the_grouped_kernel_gives_the_tokens_of_plain_generate(onevision):
    model, inputs = onevision
    plain = _generate(model, inputs)
    assert torch.equal(_generate(model, inputs, "full", decode_attention="all"), plain)
    pruned = _generate(model, inputs, "plphp")
    assert torch.equal(_generate(model, inputs, "plphp", decode_attention="model"), pruned)


def test_an_unknown_decode_attention_mode_is_a_one_line_error(onevision):
    model, _ = onevision
    with pytest.raises(ConfigError, match="decode_attention: 'fast' is not allowed; use one of pruned, all, model"):
        plphp.apply(model, "plphp", decode_attention="fast")
