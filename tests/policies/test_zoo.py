"""Property tests of the policy-zoo components (FastV, SnapKV, key norm, PyramidKV, PyramidDrop,
VTW, AdaKV) on random tensors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from plphp.contract import check_keep_indices
from plphp.errors import ConfigError
from plphp.ops import budget_per_sample, kept_count
from plphp.policies.adaptive_topk import AdaptiveTopK, adaptive_topk
from plphp.policies.head_topk import HeadTopK
from plphp.policies.key_norm import KeyNorm
from plphp.policies.last_token import LastTokenAttention
from plphp.policies.pyramid import Pyramid
from plphp.policies.pyramid_stages import PyramidStages
from plphp.policies.shared_topk import SharedTopK
from plphp.policies.snapkv import SnapKV
from plphp.policies.withdraw import Withdraw
from plphp.policy import load_policy
from tests.policies.strategies import prompts, random_stats

rates = st.floats(0.0, 1.0, allow_nan=False)


@given(prompts(), st.integers(0, 10_000), rates)
def test_shared_topk_keeps_one_set_the_top_of_the_head_mean(prompt, seed, rate):
    stats = random_stats(prompt, seed)
    retention = torch.full((prompt.batch_size,), rate)
    keep = SharedTopK().select(stats, retention, prompt, 0)
    check_keep_indices(keep, prompt, budget_per_sample(retention, prompt), "shared_topk")
    assert torch.equal(keep, keep[:, :1].expand_as(keep))
    mean = stats.scores.mean(1)
    for b in range(prompt.batch_size):
        kept = set(keep[b, 0][keep[b, 0] >= 0].tolist())
        for segment in prompt.segments(b):
            inside = [p for p in segment.tolist() if p in kept]
            outside = [p for p in segment.tolist() if p not in kept]
            if inside and outside:
                assert mean[b, inside].min() >= mean[b, outside].max()


@given(prompts(), st.integers(0, 10_000), rates, st.floats(0.0, 1.0))
def test_adaptive_topk_spends_the_layer_budget_with_a_floor_per_head(prompt, seed, rate, safeguard):
    stats = random_stats(prompt, seed)
    retention = torch.full((prompt.batch_size,), rate)
    keep = AdaptiveTopK(safeguard=safeguard).select(stats, retention, prompt, 0)
    budget = budget_per_sample(retention, prompt)
    check_keep_indices(keep, prompt, budget, "adaptive_topk", head_budgets=True)
    for b in range(prompt.batch_size):
        for segment in prompt.segments(b):
            k = kept_count(rate, len(segment))
            per_head = torch.isin(keep[b], segment).sum(-1)  # [H_kv]
            assert per_head.sum() == k * prompt.num_kv_heads  # each image keeps its share over the heads
            assert (per_head >= int(safeguard * k)).all()


@given(st.integers(1, 4), st.integers(1, 30), st.integers(0, 10_000))
def test_adaptive_topk_with_a_full_safeguard_is_per_head_topk(heads, n, seed):
    scores = torch.rand(heads, n, generator=torch.Generator().manual_seed(seed))
    k = max(1, n // 3)
    picked = adaptive_topk(scores, k, 1.0)
    for h, cols in enumerate(picked):
        assert set(cols.tolist()) == set(scores[h].topk(k).indices.tolist())


def test_adaptive_topk_moves_budget_to_the_head_that_spreads_its_attention():
    scores = torch.tensor([[0.9, 0.05, 0.03, 0.02], [0.3, 0.3, 0.2, 0.2]])
    picked = adaptive_topk(scores, 2, 0.0)
    assert [len(c) for c in picked] == [1, 3]


@given(prompts(), st.integers(0, 10_000))
def test_key_norm_ranks_small_keys_first(prompt, seed):
    generator = torch.Generator().manual_seed(seed)
    key = torch.randn(prompt.batch_size, prompt.num_kv_heads, prompt.length, 8, generator=generator)
    stats = KeyNorm().collect(None, key, prompt, 0, 1.0)
    assert stats.scores.shape == (prompt.batch_size, prompt.num_kv_heads, prompt.length)
    torch.testing.assert_close(stats.scores, -key.norm(dim=-1))
    assert torch.isnan(stats.vision_attention).all()


@given(prompts(), st.integers(0, 10_000), st.integers(1, 8))
def test_snapkv_with_kernel_1_is_window_attention_and_pooling_only_raises_max(prompt, seed, window):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(prompt.batch_size, prompt.num_heads, prompt.length, 8, generator=generator)
    key = torch.randn(prompt.batch_size, prompt.num_kv_heads, prompt.length, 8, generator=generator)
    plain = LastTokenAttention(window=window).collect(query, key, prompt, 0, 8**-0.5)
    same = SnapKV(window=window, kernel=1).collect(query, key, prompt, 0, 8**-0.5)
    torch.testing.assert_close(same.scores, plain.scores)
    torch.testing.assert_close(same.vision_attention, plain.vision_attention)
    pooled = SnapKV(window=window, kernel=5, pooling="max").collect(query, key, prompt, 0, 8**-0.5)
    assert (pooled.scores >= plain.scores - 1e-7).all()
    torch.testing.assert_close(pooled.vision_attention, plain.vision_attention)


@given(prompts(), st.floats(0.0, 0.5), st.floats(0.0, 1.0), st.integers(0, 3), st.integers(1, 8))
def test_pyramid_falls_with_depth_and_keeps_the_mean(prompt, r, spread, start, span):
    prompt = replace(prompt, num_layers=start + span + 2, layer_range=(start, start + span))
    rates = Pyramid(retention=r, spread=spread).allocate([], prompt)
    assert rates.shape == (prompt.num_layers, prompt.batch_size)
    inside = rates[start : start + span, 0]
    assert (inside[1:] <= inside[:-1] + 1e-6).all()
    assert abs(float(inside.mean()) - r) < 1e-5
    assert ((rates >= 0) & (rates <= 1)).all()


@given(prompts(), st.integers(1, 40), st.floats(0.0, 1.0))
def test_pyramid_stages_halve_at_each_boundary(prompt, depth, ratio):
    prompt = replace(prompt, num_layers=depth)
    rates = PyramidStages(boundaries=(0.25, 0.5, 0.75), ratio=ratio).allocate([], prompt)[:, 0]
    assert (rates[1:] <= rates[:-1] + 1e-7).all()
    for layer in range(depth):
        stage = sum(layer >= int(b * depth) for b in (0.25, 0.5, 0.75))
        assert abs(float(rates[layer]) - ratio**stage) < 1e-6


@given(prompts(), st.integers(1, 40), st.floats(0.01, 1.0))
def test_withdraw_keeps_everything_then_nothing(prompt, depth, after):
    prompt = replace(prompt, num_layers=depth)
    rates = Withdraw(after=after).allocate([], prompt)[:, 0]
    cut = int(after * depth)
    assert rates[:cut].eq(1).all() and rates[cut:].eq(0).all()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"stage": "prefill", "start_layer": 1, "selector": {"name": "head_topk"}}, "chooses per head"),
        ({"stage": "prefill", "start_layer": 1, "selector": {"name": "adaptive_topk"}}, "chooses per head"),
        ({"stage": "prefill", "start_layer": 0, "selector": {"name": "shared_topk"}}, "start_layer must be at least 1"),
        ({"preset": "fastv", "end_layer": 3}, "do not come back"),
        ({"preset": "fastv-kv", "start_layer": 0}, "rank_by 'layer_before_start'"),
        ({"preset": "pyramiddrop", "allocator": {"boundaries": [0.5, 0.25]}}, "increase strictly"),
        ({"preset": "pyramidkv", "allocator": {"retention": 0.8, "spread": 0.5}}, "must not exceed 1"),
        ({"preset": "snapkv", "collector": {"kernel": 4}}, "kernel must be odd"),
        ({"preset": "vtw", "allocator": {"after": 0}}, "after"),
    ],
)
def test_bad_zoo_configs_say_what_is_wrong(config, message):
    with pytest.raises(ConfigError, match=message):
        load_policy(config)


def test_head_topk_and_shared_topk_agree_with_one_kv_head():
    from plphp.testing import random_prompt

    prompt = random_prompt(num_heads=1, num_kv_heads=1)
    stats = random_stats(prompt, 3)
    retention = torch.full((prompt.batch_size,), 0.4)
    assert torch.equal(HeadTopK().select(stats, retention, prompt, 0), SharedTopK().select(stats, retention, prompt, 0))


@given(prompts(), st.integers(0, 10_000))
def test_question_window_averages_the_text_after_the_last_image(prompt, seed):
    from plphp.ops import observers, window_attention

    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(prompt.batch_size, prompt.num_heads, prompt.length, 8, generator=generator)
    key = torch.randn(prompt.batch_size, prompt.num_kv_heads, prompt.length, 8, generator=generator)
    stats = LastTokenAttention(window="question").collect(query, key, prompt, 0, 8**-0.5)
    full = window_attention(query, key, prompt.key_valid, prompt.length, 8**-0.5)  # every query, [B, H, L, L]
    voting = observers(prompt, "question")
    for b in range(prompt.batch_size):
        vision = torch.nonzero(prompt.vision_mask[b]).flatten()
        after = vision.max() + 1 if len(vision) else prompt.length - 1
        voters = [p for p in range(int(after), prompt.length) if prompt.key_valid[b, p]] or [prompt.length - 1]
        assert int(voting[b].sum()) == len(voters)
        want = full[b, :, voters].mean(1)
        torch.testing.assert_close(stats.scores[b], want, atol=1e-5, rtol=1e-5)


def test_question_window_is_validated():
    with pytest.raises(ConfigError, match="window"):
        load_policy({"collector": {"name": "last_token", "window": "questions"}})
    with pytest.raises(ConfigError, match="between 1 and 4096"):
        load_policy({"collector": {"name": "last_token", "window": 0}})
