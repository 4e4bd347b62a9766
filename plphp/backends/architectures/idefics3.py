"""Idefics3 and SmolVLM: an image is sub-images plus a global image, with markers between them.

The processor splits a large image into a grid of sub-images and adds a global image (the whole
picture, downscaled); a pixel shuffle (`scale_factor`) folds each one's patches into
`image_seq_len` tokens. The prompt reads, per image::

    <fake_token_around_image><row_1_col_1><image>×n <fake_token_around_image><row_1_col_2><image>×n ...
    \\n\\n<fake_token_around_image><global-img><image>×n<fake_token_around_image>

(a small image is the last line alone). Only `<image>` tokens are vision tokens; the markers are
text. All of an image's sub-images and its global image are one segment. `pixel_values` are 5-D
(`[B, images, 3, H, W]`) and padded with all-zero images, which the model skips, so the prompt's
ids are again the record of which tokens belong to which image. SmolVLM's processor writes a video
as one unsplit image per frame (with timestamps as text), so each frame is a segment of its own
under either `segments` value.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from plphp.backends.adapters import ModelAdapter


class Idefics3Adapter(ModelAdapter):
    """`Idefics3ForConditionalGeneration` and `SmolVLMForConditionalGeneration`."""

    name = "idefics3"
    architectures = (
        "Idefics3ForConditionalGeneration",
        "Idefics3Model",
        "SmolVLMForConditionalGeneration",
        "SmolVLMModel",
    )
    vision_token_attributes: ClassVar[tuple[str, ...]] = ("image_token_id",)
    video_token_attributes: ClassVar[tuple[str, ...]] = ()

    def segment_ids(self, input_ids: torch.Tensor, vision_mask: torch.Tensor) -> torch.Tensor:
        """`[B, L]` image of each vision token: every image ends with its global image's run.

        The configs do not hold the `<global-img>` id, but every image ends with a global image, so
        the token before a sample's last run of vision tokens is `<global-img>`; each run that follows
        that token closes an image (one run per sub-image, split by the markers, is the base class's).
        """
        runs = super().segment_ids(input_ids, vision_mask)
        out = torch.full_like(runs, -1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        for row in range(input_ids.shape[0]):
            count = int(runs[row].max()) + 1
            if count == 0:
                continue
            first = torch.full((count,), input_ids.shape[1], dtype=torch.long, device=input_ids.device)
            first.scatter_reduce_(0, runs[row][vision_mask[row]], positions[vision_mask[row]], "amin")
            before = input_ids[row, (first - 1).clamp(min=0)]
            closes = (before == before[-1]).long()  # [runs] True at each global image's run
            image_of_run = closes.cumsum(0) - closes
            out[row][vision_mask[row]] = image_of_run[runs[row][vision_mask[row]]]
        return out


ADAPTERS = [Idefics3Adapter]
