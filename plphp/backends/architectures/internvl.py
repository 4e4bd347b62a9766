"""InternVL (InternVL 2.5 / 3.x in transformers): an image is tiles plus a thumbnail, one segment.

The processor cuts an image into up to `max_patches` tiles and, when there are several, adds a
thumbnail of the whole picture; each tile's patches are folded by a pixel shuffle
(`downsample_ratio`, 0.5: 2×2 patches per token). The prompt holds `<img>`, `image_seq_length`
`<IMG_CONTEXT>` tokens per tile and thumbnail, `</img>`: one unbroken run of vision tokens per
image, so the base class's runs are the images. `pixel_values` stack every tile of the batch
(`[tiles, 3, H, W]`, no per-sample dimension), so the prompt's ids are the only record of which
sample's image a tile belongs to, which is all plphp needs. InternVL writes a video as one
`<img>...</img>` block per frame of the same `<IMG_CONTEXT>` token, so its frames are images here.
"""

from __future__ import annotations

from typing import ClassVar

from plphp.backends.adapters import ModelAdapter


class InternVLAdapter(ModelAdapter):
    """`InternVLForConditionalGeneration`: `<IMG_CONTEXT>` tokens; `<img>` / `</img>` are text."""

    name = "internvl"
    architectures = ("InternVLForConditionalGeneration", "InternVLModel")
    vision_token_attributes: ClassVar[tuple[str, ...]] = ("image_token_id",)
    video_token_attributes: ClassVar[tuple[str, ...]] = ()


ADAPTERS = [InternVLAdapter]
