"""LLaVA-NeXT-Video: LLaVA-NeXT's any-resolution images, plus videos of pooled frames.

Images are LLaVA-NeXT's (tiles and row newlines of `<image>`, one segment per image). A video is
`<video>` tokens, frame after frame: each frame's patch grid (CLS dropped) average-pooled by
`spatial_pool_stride`, so every frame has `(image_size / patch_size / stride)²` tokens and no
newline. Under `segments: frame` each frame is a segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from plphp.backends.architectures.llava import LlavaNextAdapter
from plphp.backends.frames import fixed_frames


class LlavaNextVideoAdapter(LlavaNextAdapter):
    """`LlavaNextVideoForConditionalGeneration`."""

    name = "llava_next_video"
    architectures = ("LlavaNextVideoForConditionalGeneration", "LlavaNextVideoModel")

    def video_frames(self, inputs: Mapping[str, Any], video_mask: torch.Tensor) -> torch.Tensor:
        """Every frame has `(image_size // patch_size // spatial_pool_stride)²` tokens."""
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size // self.config.spatial_pool_stride
        return fixed_frames(video_mask, side * side)


ADAPTERS = [LlavaNextVideoAdapter]
