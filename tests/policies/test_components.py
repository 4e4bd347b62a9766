"""Property tests of the built-in components on random tensors (no model involved)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from plphp.contract import check_keep_indices
from plphp.errors import PolicyContractError
from plphp.ops import budget_per_sample, kept_count, reduce_heads, window_attention
from plphp.policies.head_topk import HeadTopK
from plphp.policies.last_token import LastTokenAttention
from plphp.policies.random_select import RandomSelector
from plphp.policies.uniform import Uniform
from plphp.policies.vision_tiers import VisionTiers
from tests.policies.strategies import prompts, random_stats

rates = st.floats(0.0, 1.0, allow_nan=False)


@given(rates, rates, st.integers(0, 5000))
def test_kept_count_is_ceil_and_monotone(r1, r2, n):
    low, high = sorted((r1, r2))
    assert 0 <= kept_count(low, n) <= kept_count(high, n) <= n
    assert kept_count(1.0, n) == n and kept_count(0.0, n) == 0
    assert kept_count(high, n) >= math.floor(high * n)
    assert kept_count(0.3, 10) == 3  # float noise does not add a token
    assert kept_count(float(torch.tensor(0.3)), 160) == 48  # nor does float32 noise on a large image


@given(prompts(), st.integers(0, 10_000), rates, st.sampled_from(["mean", "max"]))
def test_head_topk_contract(prompt, seed, rate, how):
    stats = random_stats(prompt, seed)
    retention = torch.full((prompt.batch_size,), rate)
    keep = HeadTopK(gqa_reduce=how).select(stats, retention, prompt, 0)
    budget = budget_per_sample(retention, prompt)
    check_keep_indices(keep, prompt, budget, "head_topk")
    scores = reduce_heads(stats.scores, prompt.num_kv_heads, how)
    for b in range(prompt.batch_size):
        for h in range(prompt.num_kv_heads):
            kept = set(keep[b, h][keep[b, h] >= 0].tolist())
            for segment in prompt.segments(b):
                inside = [p for p in segment.tolist() if p in kept]
                outside = [p for p in segment.tolist() if p not in kept]
                # each image keeps its own share, and it is the top of that head's scores
                assert len(inside) == kept_count(rate, len(segment))
                if inside and outside:
                    assert scores[b, h, inside].min() >= scores[b, h, outside].max()


@given(prompts(), st.integers(0, 10_000), rates, rates)
def test_head_topk_monotone_in_retention(prompt, seed, r1, r2):
    stats = random_stats(prompt, seed)
    low, high = sorted((r1, r2))
    select = HeadTopK()
    small = select.select(stats, torch.full((prompt.batch_size,), low), prompt, 0)
    large = select.select(stats, torch.full((prompt.batch_size,), high), prompt, 0)
    for b in range(prompt.batch_size):
        for h in range(prompt.num_kv_heads):
            assert set(small[b, h].tolist()) - {-1} <= set(large[b, h].tolist()) - {-1}


@given(prompts(), st.integers(0, 10_000), rates, st.integers(0, 5))
def test_random_selector_contract_and_determinism(prompt, seed, rate, layer):
    stats = random_stats(prompt, seed)
    retention = torch.full((prompt.batch_size,), rate)
    selector = RandomSelector(seed=seed)
    keep = selector.select(stats, retention, prompt, layer)
    check_keep_indices(keep, prompt, budget_per_sample(retention, prompt), "random")
    assert torch.equal(keep, RandomSelector(seed=seed).select(stats, retention, prompt, layer))


@given(prompts(), st.integers(0, 10_000))
def test_vision_tiers_picks_one_of_three_tiers(prompt, seed):
    params = dict(alpha=0.5, beta=0.2, retention=0.4, delta=0.15)
    stats = [random_stats(prompt, seed + i) for i in range(prompt.num_layers)]
    out = VisionTiers(**params).allocate(stats, prompt)
    assert out.shape == (prompt.num_layers, prompt.batch_size)
    for layer, s in enumerate(stats):
        for b, gamma in enumerate(s.vision_attention.tolist()):
            want = 0.55 if gamma >= 0.5 else (0.25 if gamma < 0.2 else 0.4)
            assert out[layer, b].item() == pytest.approx(want)


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0.1, 0.9), st.floats(0.0, 0.1))
def test_vision_tiers_monotone_in_gamma(g1, g2, r, d):
    low, high = sorted((g1, g2))
    allocator = VisionTiers(alpha=0.6, beta=0.3, retention=r, delta=d)
    prompt = _one_sample_prompt()
    stats = [_gamma(low), _gamma(high)]
    out = allocator.allocate(stats, prompt)
    assert out[0, 0] <= out[1, 0]


def test_uniform_fills_every_layer_and_sample():
    prompt = _one_sample_prompt()
    assert torch.equal(Uniform(retention=0.25).allocate([], prompt), torch.full((2, 1), 0.25))


@given(
    st.integers(1, 3),
    st.sampled_from([(2, 1), (4, 2), (4, 4)]),
    st.integers(1, 12),
    st.integers(1, 4),
    st.integers(0, 99),
)
def test_window_attention_matches_the_naive_softmax(batch, heads, length, window, seed):
    num_heads, num_kv = heads
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, num_heads, length, 8, generator=generator)
    key = torch.randn(batch, num_kv, length, 8, generator=generator)
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, : length // 3] = False
    probs = window_attention(query, key, valid, window, 0.35)
    repeated = key.repeat_interleave(num_heads // num_kv, dim=1)
    w = min(window, length)
    for i in range(w):
        pos = length - w + i
        logits = (query[:, :, pos : pos + 1] @ repeated[:, :, : pos + 1].transpose(-1, -2)) * 0.35
        logits = logits.masked_fill(~valid[:, None, None, : pos + 1], float("-inf"))
        want = torch.softmax(logits, -1).nan_to_num(0.0)[:, :, 0]
        torch.testing.assert_close(probs[:, :, i, : pos + 1], want, atol=1e-5, rtol=1e-5)
        assert (probs[:, :, i, pos + 1 :] == 0).all()
    assert (probs[0, :, :, : length // 3] == 0).all()


@given(prompts(), st.integers(0, 99))
def test_last_token_gamma_is_the_vision_share(prompt, seed):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(prompt.batch_size, prompt.num_heads, prompt.length, 8, generator=generator)
    key = torch.randn(prompt.batch_size, prompt.num_kv_heads, prompt.length, 8, generator=generator)
    stats = LastTokenAttention(window=2).collect(query, key, prompt, 0, 8**-0.5)
    assert stats.scores.shape == (prompt.batch_size, prompt.num_heads, prompt.length)
    torch.testing.assert_close(stats.scores.sum(-1), torch.ones(prompt.batch_size, prompt.num_heads))
    assert ((stats.vision_attention >= 0) & (stats.vision_attention <= 1 + 1e-6)).all()
    no_vision = ~prompt.vision_mask.any(-1)
    assert (stats.vision_attention[no_vision] == 0).all()


def test_contract_check_names_what_is_wrong():
    prompt = _one_sample_prompt()  # vision tokens at positions 2..5
    budget = [2]
    cases = {
        "not sorted": torch.tensor([[[4, 3]]]),
        "not sorted and unique": torch.tensor([[[3, 3]]]),
        "not a vision token": torch.tensor([[[0, 3]]]),
        "beyond the prompt length": torch.tensor([[[3, 99]]]),
        "kept [[1]] tokens": torch.tensor([[[3, -1]]]),
        "padding before a valid index": torch.tensor([[[-1, 3]]]),
        "shape": torch.tensor([[3, 4]]),
    }
    for fragment, keep in cases.items():
        with pytest.raises(PolicyContractError, match=fragment.split()[0]) as info:
            check_keep_indices(keep, prompt, budget, "broken")
        assert "broken" in str(info.value)
    check_keep_indices(torch.tensor([[[3, 5]]]), prompt, budget, "fine")


def _one_sample_prompt():
    from plphp.stats import PromptInfo

    segment_ids = torch.tensor([[-1, -1, 0, 0, 0, 0, -1]])
    return PromptInfo(segment_ids >= 0, segment_ids, torch.ones(1, 7, dtype=torch.bool), 2, 1, 1, 8)


def _gamma(value):
    from plphp.stats import LayerStats

    return LayerStats(scores=torch.zeros(1, 1, 7), vision_attention=torch.tensor([value]))
