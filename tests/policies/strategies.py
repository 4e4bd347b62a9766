"""Hypothesis strategies for random prompts and statistics."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from plphp.stats import LayerStats, PromptInfo


@st.composite
def prompts(draw, max_batch: int = 3, max_images: int = 3, kv_heads=(1, 2), groups=(1, 2, 4)) -> PromptInfo:
    """A batch of left-padded prompts, each with 0..max_images images of 1..12 tokens between text."""
    batch = draw(st.integers(1, max_batch))
    num_kv = draw(st.sampled_from(kv_heads))
    heads = num_kv * draw(st.sampled_from(groups))
    rows = []
    for _ in range(batch):
        row = [0] * draw(st.integers(1, 4))  # text, marked by -2 below
        row = [-2] * len(row)
        for image in range(draw(st.integers(0, max_images))):
            row += [image] * draw(st.integers(1, 12)) + [-2] * draw(st.integers(0, 3))
        rows.append(row)
    length = max(len(r) for r in rows)
    segment_ids = torch.full((batch, length), -1, dtype=torch.long)
    key_valid = torch.zeros(batch, length, dtype=torch.bool)
    for b, row in enumerate(rows):
        start = length - len(row)
        key_valid[b, start:] = True
        segment_ids[b, start:] = torch.tensor([max(v, -1) for v in row])
    return PromptInfo(
        vision_mask=segment_ids >= 0,
        segment_ids=segment_ids,
        key_valid=key_valid,
        num_layers=draw(st.integers(1, 6)),
        num_heads=heads,
        num_kv_heads=num_kv,
        head_dim=8,
    )


def random_stats(prompt: PromptInfo, seed: int) -> LayerStats:
    """Distinct random scores (no ties) for every head and position."""
    generator = torch.Generator().manual_seed(seed)
    shape = (prompt.batch_size, prompt.num_heads, prompt.length)
    scores = torch.rand(shape, generator=generator, dtype=torch.float64).float()
    gamma = torch.rand(prompt.batch_size, generator=generator)
    return LayerStats(scores=scores, vision_attention=gamma)
