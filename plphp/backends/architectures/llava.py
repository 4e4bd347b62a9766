"""LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision: a CLIP or SigLIP tower, a fixed square per image or
any-resolution tiles with newline tokens."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from plphp.backends.adapters import ModelAdapter
from plphp.backends.frames import fixed_frames
from plphp.backends.layout import TokenLayout, anyres_layout, unpadded_grid
from plphp.backends.tower import match_patches, newline_layout
from plphp.errors import UnsupportedModelError


class _LlavaTower(ModelAdapter):
    """What the LLaVA family shares: a CLIP or SigLIP tower at `model.model.vision_tower`."""

    def tower_attention_modules(self) -> list[torch.nn.Module]:
        """CLIP / SigLIP encoder layers' self-attention."""
        return _encoder_attention(self.model.model.vision_tower)

    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_tower

    def tower_has_cls(self) -> bool:
        return self.config.vision_config.model_type == "clip_vision_model"


class LlavaAdapter(_LlavaTower):
    """LLaVA-1.5 style: a fixed number of tokens per image (so adjacent images are told apart)."""

    name = "llava"
    architectures = ("LlavaForConditionalGeneration", "LlavaModel")

    def tokens_per_image(self) -> int | None:
        """Patches, plus the tower's CLS token under `full`, less one token under `default`.

        A CLIP tower prepends a CLS token and a SigLIP tower has none; the `default` strategy
        drops the first feature (CLIP's CLS), `full` keeps them all. This is LlavaProcessor's count.
        """
        vision = self.config.vision_config
        count = (vision.image_size // vision.patch_size) ** 2
        count += 1 if vision.model_type == "clip_vision_model" else 0
        if getattr(self.config, "vision_feature_select_strategy", "default") == "default":
            count -= 1
        return count

    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """A square of patches over the picture as the processor crops it; a CLIP tower's CLS token
        (kept under `full`) is no patch, and SigLIP under `default` loses its first patch."""
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        clip = vision.model_type == "clip_vision_model"
        default = getattr(self.config, "vision_feature_select_strategy", "default") == "default"
        layout = TokenLayout.grid(side, side, skip_first=default and not clip)
        if clip and not default:  # the CLS token comes first
            layout = TokenLayout(layout.tiles, (None, *layout.cells))
        return layout if layout.num_tokens == num_tokens else TokenLayout.strip(num_tokens)

    def tower_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """One tower call over every image; the `default` strategy drops the first token, as the features do."""
        return list(_select_features(self.config, torch.cat(calls)))


def _encoder_attention(tower: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention of a CLIP / SigLIP tower's encoder layers (older releases nest a `vision_model`)."""
    encoder = getattr(tower, "vision_model", tower).encoder
    return [layer.self_attn for layer in encoder.layers]


def _select_features(config: Any, statistics: torch.Tensor) -> torch.Tensor:
    """`[n, T]` per tower token -> the tokens the projector sees (`default` drops the first)."""
    default = getattr(config, "vision_feature_select_strategy", "default") == "default"
    return statistics[:, 1:] if default else statistics


class LlavaNextAdapter(_LlavaTower):
    """LLaVA-NeXT and LLaVA-OneVision: any-resolution tiles, so tokens per image vary."""

    name = "llava_next"
    architectures = (
        "LlavaNextForConditionalGeneration",
        "LlavaNextModel",
        "LlavaOnevisionForConditionalGeneration",
        "LlavaOnevisionModel",
    )

    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """The base image's square, then the any-resolution tiles' unpadded grid with a newline token
        after each row (`plphp.backends.layout.anyres_layout`), as the model's `pack_image_features`
        lays them out. OneVision tiles only an image that is alone in its sample (`batch_num_images`)
        and downscales a grid beyond `anyres_max_N`."""
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        if inputs.get("image_sizes") is None and inputs.get("token_features") is not None:
            return self._layout_from_newlines(inputs["token_features"][image], side)
        size = [int(v) for v in inputs["image_sizes"][image]]
        aspect = getattr(self.config, "vision_aspect_ratio", None)  # OneVision only
        tiled = True
        counts = inputs.get("batch_num_images")
        if aspect is not None and counts is not None:
            per_image = [int(n) for n in counts for _ in range(int(n))]
            tiled = per_image[image] == 1
        if not tiled:
            return anyres_layout(side, None, None)
        down, across = get_anyres_image_grid_shape(size, self.config.image_grid_pinpoints, vision.image_size)
        max_tiles = int(aspect.removeprefix("anyres_max_")) if aspect and aspect.startswith("anyres_max_") else None
        rows, cols = unpadded_grid(size, (down * side, across * side), max_tiles, side)
        return anyres_layout(side, (down, across), (rows, cols))

    def video_frames(self, inputs: Mapping[str, Any], video_mask: torch.Tensor) -> torch.Tensor:
        """OneVision pools each frame's patch grid 2×2 (rounding up) and ends a video with one newline
        token (`get_video_features`), which counts in the last frame."""
        if getattr(self.config, "video_token_id", None) is None:
            return super().video_frames(inputs, video_mask)
        side = math.ceil(self.config.vision_config.image_size // self.config.vision_config.patch_size / 2)
        return fixed_frames(video_mask, side * side, trailer=1)

    def tower_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """Per tile statistics, split per image as the model splits its tiles, then packed by the model's
        own `pack_image_features` as one-channel features whose newline is NaN (base tile, unpadded and
        possibly downscaled tile grid, a newline after each row)."""
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        sizes = inputs.get("image_sizes")
        if sizes is None:  # generate() encoded the images first and consumed image_sizes
            return self._matched_statistics(calls, inputs)
        counts = inputs.get("batch_num_images")
        onevision = getattr(self.config, "vision_aspect_ratio", None) is not None
        tiled = [int(n) == 1 for n in counts for _ in range(int(n))] if onevision and counts is not None else None
        tiles = [
            image_size_to_num_patches(size, self.config.image_grid_pinpoints, self.config.vision_config.image_size)
            if tiled is None or tiled[i]
            else 1
            for i, size in enumerate(sizes)
        ]
        statistics = _select_features(self.config, torch.cat(calls))[..., None]  # [tiles, T, 1]
        per_image = torch.split(statistics, tiles, dim=0)
        newline = torch.full((1,), float("nan"), device=statistics.device)
        inner = self.model.model
        if onevision:
            packed, lengths = inner.pack_image_features(
                per_image, sizes, image_newline=newline, vision_aspect_ratio=self.config.vision_aspect_ratio
            )
        else:
            packed, lengths = inner.pack_image_features(
                per_image, sizes, self.config.vision_feature_select_strategy, image_newline=newline
            )
        if isinstance(packed, torch.Tensor):  # releases that concatenate the images
            packed = torch.split(packed, [int(n) for n in lengths])
        return [image[..., 0] for image in packed]

    def vision_projector(self) -> torch.nn.Module:
        return self.model.model.multi_modal_projector

    def _layout_from_newlines(self, features: torch.Tensor, side: int) -> TokenLayout:
        """The layout read off an image's token features (`generate()` consumed `image_sizes`)."""
        return newline_layout(features, self.model.model.image_newline.detach(), side)

    def _matched_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """Without `image_sizes`: each token takes the statistic of the projected patch its feature is a
        copy of (`plphp.backends.tower.match_patches`)."""
        patches = inputs.get("projected_patches")
        tokens = inputs.get("token_features")
        if patches is None or tokens is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: tower statistics need image_sizes or the projected patches"
            )
        statistics = _select_features(self.config, torch.cat(calls)).flatten()  # [tiles · T']
        return match_patches(statistics, patches.flatten(0, 1), tokens, self.model.model.image_newline.detach())


ADAPTERS = [LlavaAdapter, LlavaNextAdapter]
