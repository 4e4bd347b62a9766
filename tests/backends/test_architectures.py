"""The special cases of the architecture families beyond the first five (plphp/backends/architectures/):
which tokens are vision tokens and how they group into segments, on the tiny models' real inputs."""

from __future__ import annotations

import torch

from plphp.registry import get_registry
from plphp.testing import tiny_vlm


def _segment_sizes(model, batch):
    adapter = get_registry().adapter_for(model)
    vision = adapter.vision_mask(batch["input_ids"]) & batch["attention_mask"].bool()
    segments = adapter.prompt_segments(dict(batch), vision)
    return [[int((row == s).sum()) for s in range(int(row.max()) + 1)] for row in segments], vision


def test_internvl_tiles_and_thumbnail_of_an_image_are_one_segment():
    from plphp.models.tiny_internvl import TOKENS_PER_TILE

    vlm = tiny_vlm("internvl")
    batch = vlm.inputs["batch3"]
    sizes, vision = _segment_sizes(vlm.model, batch)
    assert [len(s) for s in sizes] == [2, 1, 0]
    # pixel_values stack every tile of the batch; each image has several tiles plus its thumbnail.
    assert batch["pixel_values"].shape[0] * TOKENS_PER_TILE == sum(map(sum, sizes))
    assert all(size % TOKENS_PER_TILE == 0 and size // TOKENS_PER_TILE > 2 for s in sizes for size in s)
    tokenizer = vlm.processor.tokenizer
    markers = torch.tensor(tokenizer.convert_tokens_to_ids(["<img>", "</img>"]))
    assert not (vision & torch.isin(batch["input_ids"], markers)).any(), "<img> and </img> are text"
    assert int(torch.isin(batch["input_ids"], markers).sum()) == 2 * 3  # one pair per image
