"""Property tests of the input stage's components on random tensors: diversity, pooling, merging."""

from __future__ import annotations

import itertools

import torch
from hypothesis import given
from hypothesis import strategies as st

from plphp.contract import check_keep_indices, check_merge, check_shared_keep
from plphp.ops import budget_per_sample, cosine_similarity, merge_features
from plphp.policies.contextual import Contextual
from plphp.policies.diversity import Diversity, greedy_max_min
from plphp.policies.features import Features
from plphp.policies.pool import Pool
from plphp.policies.random_shared import RandomShared
from plphp.policies.shared_topk import SharedTopK
from plphp.stats import VisionStats
from plphp.testing import random_vision
from tests.policies.strategies import prompts

rates = st.floats(0.0, 1.0, allow_nan=False)


def _min_pairwise(distance: torch.Tensor, chosen) -> float:
    chosen = list(chosen)
    return min(float(distance[a, b]) for a, b in itertools.combinations(chosen, 2))


@given(st.integers(3, 7), st.integers(2, 4), st.integers(2, 5), st.integers(0, 10_000))
def test_diversity_greedy_steps_are_optimal_and_within_a_quarter_of_the_max_min_optimum(count, k, dim, seed):
    """Greedy max-min: every step adds the token farthest from the kept set (checked against every
    candidate), the first is the most isolated token, and the kept set's smallest cosine distance is
    at least 1/4 of the brute-force optimum (1/2 in the metric sqrt(1 - cos)); it need not be optimal."""
    k = min(k, count)
    features = torch.randn(count, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
    distance = (1.0 - cosine_similarity(features)).clamp(min=0)
    picked = greedy_max_min(distance, k).tolist()
    assert len(set(picked)) == k
    isolation = [min(float(distance[i, j]) for j in range(count) if j != i) for i in range(count)]
    assert isolation[picked[0]] >= max(isolation) - 1e-6
    for step in range(1, k):
        kept = picked[:step]
        gap = [min(float(distance[c, s]) for s in kept) for c in range(count)]
        best = max(gap[c] for c in range(count) if c not in kept)
        assert gap[picked[step]] >= best - 1e-6
    optimum = max(_min_pairwise(distance, subset) for subset in itertools.combinations(range(count), k))
    assert _min_pairwise(distance, picked) >= optimum / 4 - 1e-6


@given(prompts(), rates, st.integers(0, 1000))
def test_diversity_and_random_shared_keep_one_budgeted_set_per_image(prompt, rate, seed):
    vision = random_vision(prompt, generator=torch.Generator().manual_seed(seed))
    stats = Features().collect_vision(vision, prompt)
    retention = torch.full((prompt.batch_size,), rate)
    for selector in (Diversity(), RandomShared(seed=seed)):
        keep = selector.select(stats, retention, prompt, 0)
        check_keep_indices(keep, prompt, budget_per_sample(retention, prompt), selector.name)
        check_shared_keep(keep, selector.name, "input stage")


@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 3), st.integers(0, 1000))
def test_pool_equals_a_naive_loop_over_blocks(rows, cols, stride, seed):
    """One image of `rows × cols` patches after two text tokens and before one: each output token is the
    mean of its stride x stride block, at the block's first token."""
    length = rows * cols + 3
    vision_mask = torch.zeros(1, length, dtype=torch.bool)
    vision_mask[0, 2 : 2 + rows * cols] = True
    segment_ids = torch.where(vision_mask, 0, -1)
    from plphp.stats import PromptInfo

    prompt = PromptInfo(vision_mask, segment_ids, torch.ones_like(vision_mask), 2, 2, 1, 8)
    features = torch.randn(1, length, 5, generator=torch.Generator().manual_seed(seed))
    cells = (tuple((0, i // cols, i % cols) for i in range(rows * cols)),)
    vision = VisionStats(features=features, tower_attention=None, cells=(cells,))
    pool = Pool(stride=stride)
    stats = Features().collect_vision(vision, prompt)
    assignment = pool.merge(torch.empty(1, 0, dtype=torch.long), stats, vision, prompt)
    budget = pool.budget([0], vision, prompt)
    check_merge(assignment, budget, prompt, "pool")
    merged = merge_features(features, assignment)
    expected = []
    for block_row in range(0, rows, stride):
        for block_col in range(0, cols, stride):
            members = [
                2 + r * cols + c
                for r in range(block_row, min(block_row + stride, rows))
                for c in range(block_col, min(block_col + stride, cols))
            ]
            expected.append((members[0], features[0, members].mean(0)))
    assert budget == [len(expected)]
    for position, mean in expected:
        assert torch.allclose(merged[0, position], mean, atol=1e-6)
    outputs = (assignment[0] == torch.arange(length)).nonzero().flatten().tolist()
    assert sorted(outputs) == sorted(position for position, _ in expected)


@given(prompts(), rates, st.floats(0.0, 1.0), st.integers(0, 1000))
def test_contextual_accounts_for_every_token_once_and_share_zero_is_plain_selection(prompt, rate, share, seed):
    vision = random_vision(prompt, generator=torch.Generator().manual_seed(seed))
    stats = Features().collect_vision(vision, prompt)
    stats.scores = torch.rand(stats.scores.shape, generator=torch.Generator().manual_seed(seed + 1))
    retention = torch.full((prompt.batch_size,), rate)
    budget = budget_per_sample(retention, prompt)
    keep = SharedTopK().select(stats, retention, prompt, 0)[:, 0]
    merger = Contextual(share=share)
    assignment = merger.merge(keep, stats, vision, prompt)
    check_merge(assignment, merger.budget(budget, vision, prompt), prompt, "contextual")
    for b in range(prompt.batch_size):
        for segment in prompt.segments(b):
            k = int(torch.isin(keep[b], segment).sum())
            contextual = min(round(share * k), k)
            assigned = assignment[b, segment] >= 0
            if contextual > 0:  # every token of the image is an output token or folds into one
                assert bool(assigned.all())
            else:  # plain selection: the kept tokens are their own outputs, the rest are dropped
                kept = set(keep[b][keep[b] >= 0].tolist()) & set(segment.tolist())
                assert {int(p) for p in segment[assigned]} == kept
                assert all(int(assignment[b, p]) == int(p) for p in segment[assigned])
    plain = Contextual(share=0.0).merge(keep, stats, vision, prompt)
    outputs = plain == torch.arange(prompt.length)
    assert torch.equal(
        outputs, torch.zeros_like(outputs).scatter_(1, keep.clamp(min=0), keep >= 0) & prompt.vision_mask
    )
    assert torch.equal(merge_features(vision.features, plain)[outputs], vision.features[outputs])


@given(st.integers(1, 3), st.integers(2, 9), st.integers(0, 1000))
def test_merge_features_equals_a_naive_mean(batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, length, 4, generator=generator)
    targets = torch.randint(0, length, (batch, length), generator=generator)
    assignment = torch.where(torch.rand(batch, length, generator=generator) < 0.2, -1, targets)
    for b in range(batch):  # make targets fixed points
        for t in assignment[b][assignment[b] >= 0].unique():
            assignment[b, t] = t
    merged = merge_features(features, assignment)
    for b in range(batch):
        for p in range(length):
            members = [q for q in range(length) if int(assignment[b, q]) == p]
            if int(assignment[b, p]) == p:
                assert torch.allclose(merged[b, p], features[b, members].mean(0), atol=1e-6)
            else:
                assert torch.equal(merged[b, p], features[b, p])
