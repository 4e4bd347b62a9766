"""Qwen2-VL and Qwen2.5-VL: images and videos framed by vision start / end tokens, M-RoPE positions,
2x2 merged patches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from plphp.backends.adapters import ModelAdapter
from plphp.backends.frames import video_runs
from plphp.backends.layout import TokenLayout
from plphp.errors import UnsupportedModelError


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL and Qwen2.5-VL: images framed by vision start / end tokens, M-RoPE positions."""

    name = "qwen2_vl"
    architectures = (
        "Qwen2VLForConditionalGeneration",
        "Qwen2VLModel",
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen2_5_VLModel",
    )

    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """Merged patches in raster order: `image_grid_thw` gives the patches (t, h, w) and each token
        merges `spatial_merge_size²` of them, so an image is an `h/m × w/m` grid over the resized picture.
        A prompt with videos (whose tokens interleave with the images') falls back to a strip."""
        if inputs.get("video_grid_thw") is not None or inputs.get("image_grid_thw") is None:
            return TokenLayout.strip(num_tokens)
        merge = int(getattr(self.config.vision_config, "spatial_merge_size", 1) or 1)
        frames, height, width = (int(v) for v in inputs["image_grid_thw"][image])
        if frames != 1:
            return TokenLayout.strip(num_tokens)
        return TokenLayout.grid(height // merge, width // merge)

    def video_frames(self, inputs: Mapping[str, Any], video_mask: torch.Tensor) -> torch.Tensor:
        """A video's tokens are its `video_grid_thw` (t, h, w) patches merged `spatial_merge_size²` to
        one, frame after frame; a frame here is one temporal patch (`temporal_patch_size` input frames).

        `generate()` encodes the videos before the prefill call and passes no `video_grid_thw` to it,
        but M-RoPE `position_ids` (`[3 or 4, B, L]`, the temporal row third from the end): each
        frame's tokens share a temporal position, which grows from one frame to the next (Qwen2.5-VL
        spaces frames by `tokens_per_second · second_per_grid_ts` positions, rounded down; frames
        less than one position apart would read as one).
        """
        runs = video_runs(video_mask)
        grid, positions = inputs.get("video_grid_thw"), inputs.get("position_ids")
        frames = torch.zeros(video_mask.shape, dtype=torch.long, device=video_mask.device)
        if grid is None and isinstance(positions, torch.Tensor) and positions.dim() == 3 and positions.shape[0] >= 3:
            temporal = positions[-3].to(video_mask.device).expand(video_mask.shape[0], -1)
            for row, run in runs:
                steps = temporal[row, run]
                frames[row, run[1:]] = (steps[1:] != steps[:-1]).long().cumsum(0)
            return frames
        if grid is None or len(grid) != len(runs):
            raise UnsupportedModelError(
                f"video_grid_thw: segments 'frame' needs one (t, h, w) row per video (or M-RoPE position_ids); the "
                f"prompt holds {len(runs)} videos and video_grid_thw {None if grid is None else len(grid)} rows"
            )
        merge = int(getattr(self.config.vision_config, "spatial_merge_size", 1) or 1)
        for (row, run), (count, height, width) in zip(runs, grid.tolist(), strict=True):
            per_frame = height * width // merge**2
            if count * per_frame != len(run):
                raise UnsupportedModelError(
                    f"video_grid_thw: a row ({count}, {height}, {width}) gives {count * per_frame} tokens, "
                    f"but its video holds {len(run)}"
                )
            frames[row, run] = torch.arange(len(run), device=run.device) // per_frame
        return frames

    def tower_attention_modules(self) -> list[torch.nn.Module]:
        """The vision blocks' attention."""
        return [block.attn for block in self.model.model.visual.blocks]

    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.visual

    def tower_inputs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        return {"image_grid_thw": grid} if grid is not None else {}

    def tower_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """Per patch statistics of every image, in the tower's order, averaged over each merged 2x2 group;
        Qwen2.5-VL's window order is undone as its merger output is."""
        if inputs.get("pixel_values_videos") is not None or inputs.get("video_grid_thw") is not None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: vision-tower statistics are mapped for images only, and this prompt "
                "holds a video; use an input-stage collector that reads the features (diversity, features)"
            )
        vision = self.config.vision_config
        merge = int(getattr(vision, "spatial_merge_size", 1) or 1)
        grid = inputs["image_grid_thw"]
        tokens = torch.cat(calls, dim=-1).flatten().view(-1, merge * merge).mean(-1)
        if getattr(vision, "window_size", None) and hasattr(vision, "fullatt_block_indexes"):  # Qwen2.5-VL
            from transformers.vision_utils import get_vision_window_index

            window_index, _ = get_vision_window_index(grid, merge, vision.window_size, vision.patch_size)
            tokens = tokens[torch.argsort(window_index.to(tokens.device))]
        return list(torch.split(tokens, [int(t * h * w) // (merge * merge) for t, h, w in grid]))


ADAPTERS = [Qwen2VLAdapter]
