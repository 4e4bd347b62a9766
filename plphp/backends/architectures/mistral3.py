"""Mistral 3 (Mistral-Small-3.1): Pixtral's image tokens with break tokens between their rows.

PixtralProcessor writes an image as rows of `[IMG]` tokens, `[IMG_BREAK]` after each row but the
last and `[IMG_END]` after the last. Only `[IMG]` (`image_token_id`) holds features; the break and
end tokens are text, never pruned. An image (one segment) runs from its first `[IMG]` to its
`[IMG_END]`. The config names no id for `[IMG_END]`; the processor ends every image with it, so it
is the token after the prompt's last vision token. The model needs `image_sizes` (the processor
returns them) for the patch merger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from plphp.backends.adapters import ModelAdapter
from plphp.backends.layout import TokenLayout


class Mistral3Adapter(ModelAdapter):
    """Mistral 3 (`Mistral3ForConditionalGeneration`): one segment per image, break tokens are text."""

    name = "mistral3"
    architectures = ("Mistral3ForConditionalGeneration", "Mistral3Model")
    vision_token_attributes = ("image_token_id",)

    def image_end_token_id(self, input_ids: torch.Tensor, vision_mask: torch.Tensor) -> int | None:
        """`[IMG_END]`: the config's `image_end_token_id` if it has one, else the token after the last
        vision token of the batch (None when the batch holds no vision token)."""
        configured = getattr(self.config, "image_end_token_id", None)
        if configured is not None:
            return int(configured)
        rows, positions = vision_mask.nonzero(as_tuple=True)
        if rows.numel() == 0:
            return None
        last = int(positions.argmax())
        row, position = int(rows[last]), int(positions[last])
        return int(input_ids[row, position + 1]) if position + 1 < input_ids.shape[1] else None

    def segment_ids(self, input_ids: torch.Tensor, vision_mask: torch.Tensor) -> torch.Tensor:
        """`[B, L]` image index of each `[IMG]` token: the `[IMG_END]` tokens before it (-1 elsewhere)."""
        end = self.image_end_token_id(input_ids, vision_mask)
        if end is None:
            return super().segment_ids(input_ids, vision_mask)
        ends = (input_ids == end).long()
        before = ends.cumsum(-1) - ends
        return torch.where(vision_mask, before, torch.full_like(before, -1))

    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """Merged patches in raster order over the resized picture (`image_sizes`: height, width)."""
        merge = int(getattr(self.config, "spatial_merge_size", 1) or 1)
        step = int(self.config.vision_config.patch_size) * merge
        height, width = (int(v) for v in inputs["image_sizes"][image])
        return TokenLayout.grid(height // step, width // step)


ADAPTERS = [Mistral3Adapter]
