"""The special cases of the tiled architectures beyond the first five (InternVL, Idefics3, SmolVLM;
plphp/backends/architectures/): which tokens are vision tokens and how they group into segments."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("arch", ["idefics3", "smolvlm"])
def test_idefics3_sub_images_and_global_image_are_one_segment_and_markers_are_text(arch):
    from plphp.models.tiny_idefics3 import TOKENS_PER_SUB_IMAGE

    vlm = tiny_vlm(arch)
    batch = vlm.inputs["batch3"]
    sizes, vision = _segment_sizes(vlm.model, batch)
    assert [len(s) for s in sizes] == [2, 1, 0]
    # 5-D pixel_values, padded with all-zero images: one real image per sub-image and global image.
    pixels = batch["pixel_values"]
    assert pixels.dim() == 5
    real = pixels.flatten(2).abs().sum(-1) > 0  # [B, images]
    assert real.sum().item() * TOKENS_PER_SUB_IMAGE == sum(map(sum, sizes))
    assert not real[2].any(), "the sample without images holds only padding images"
    tokenizer = vlm.processor.tokenizer
    marker_names = ["<fake_token_around_image>", "<global-img>", "<row_1_col_1>", "<row_2_col_3>"]
    markers = torch.tensor(tokenizer.convert_tokens_to_ids(marker_names))
    assert (
        torch.isin(batch["input_ids"], markers).any() and not (vision & torch.isin(batch["input_ids"], markers)).any()
    )
    # Every segment is a grid of sub-images (at least 2) plus a global image.
    assert all(size % TOKENS_PER_SUB_IMAGE == 0 and size // TOKENS_PER_SUB_IMAGE >= 3 for s in sizes for size in s)


def test_idefics3_images_that_are_not_split_are_one_run_each():
    """Two small pictures side by side (`<fake><global-img><image>×n<fake><fake><global-img>...`): two segments."""
    from plphp.backends.inputs import chat_inputs
    from plphp.models import make_image

    vlm = tiny_vlm("idefics3")
    processor = vlm.processor
    batch = chat_inputs(processor, [("two", [make_image(64, 64, seed=1), make_image(64, 64, seed=2)])])
    unsplit = processor(
        text=[
            processor.apply_chat_template([[{"role": "user", "content": [{"type": "image"}] * 2}]], tokenize=False)[0]
        ],
        images=[[make_image(64, 64, seed=1), make_image(64, 64, seed=2)]],
        do_image_splitting=False,
        return_tensors="pt",
    )
    assert _segment_sizes(vlm.model, unsplit)[0] == [[16, 16]]
    assert _segment_sizes(vlm.model, batch)[0] == [[160, 160]]
