"""Qwen3-VL and Qwen3.5: Qwen2.5-VL's images and M-RoPE, plus DeepStack (Qwen3-VL) or a hybrid
language model (Qwen3.5).

- **DeepStack** (Qwen3-VL): features of several vision blocks are added to the hidden states at the
  prompt's vision positions after each of the first decoder layers (one layer per block of
  `vision_config.deepstack_visual_indexes`). The prefill stage cannot start at or before the last of
  those layers: a shrunk sequence no longer has the positions the additions are indexed by. The
  decode stage may prune them: prefill is exact, and the cache is pruned once it ends.
- **Interleaved M-RoPE**: the rotary embedding computes cos / sin for every position up front, so a
  shrunk sequence gathers them like Qwen2-VL's (`ModelAdapter.gather_positions`).
- **Hybrid** (Qwen3.5): linear-attention layers (`layer_types`) keep a recurrent state, not a KV
  cache; only the full-attention layers are pruned, and the report lists the others as not pruned.
- **Timestamped video** (both; `Qwen3VLProcessor`): each frame (temporal patch) of a video is its own
  run, `<t seconds><|vision_start|> video tokens <|vision_end|>`, all inside the chat template's
  `<|vision_start|> ... <|vision_end|>`; positions count the timestamp text, not M-RoPE frame ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from plphp.backends.architectures.qwen2_vl import Qwen2VLAdapter
from plphp.backends.frames import video_runs
from plphp.errors import UnsupportedModelError


class TimestampedVideoAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL's images; videos written frame by frame between timestamps (Qwen3-VL, Qwen3.5).

    A run of video tokens is one frame, so `segments: frame` needs no more than the runs; for
    `segments: image` the runs of one video make one segment.
    """

    name = "timestamped_video"
    architectures = ()

    def video_of_runs(self, inputs: Mapping[str, Any], video_mask: torch.Tensor) -> list[int]:
        """The video (0, 1, ... over the batch) of each run of `frames.video_runs(video_mask)`.

        With `video_grid_thw` (a direct forward) each video is its `t` runs of `h·w / m²` tokens. Without
        it (`generate()` passes none to the prefill call) the runs of one video are those inside one
        outer `<|vision_start|> ... <|vision_end|>`, where the processor writes them.
        """
        runs = video_runs(video_mask)
        grid = inputs.get("video_grid_thw")
        if grid is not None:
            merge = int(getattr(self.config.vision_config, "spatial_merge_size", 1) or 1)
            sizes = [
                (video, height * width // merge**2)
                for video, (t, height, width) in enumerate(grid.tolist())
                for _ in range(t)
            ]
            if len(sizes) != len(runs) or any(size != len(run) for (_, size), (_, run) in zip(sizes, runs)):
                raise UnsupportedModelError(
                    f"video_grid_thw: rows {grid.tolist()} give frames of {[size for _, size in sizes]} tokens, but "
                    f"the prompt's runs of video tokens hold {[len(run) for _, run in runs]}"
                )
            return [video for video, _ in sizes]
        input_ids = inputs["input_ids"]
        start, end = (getattr(self.config, f"vision_{edge}_token_id", None) for edge in ("start", "end"))
        if start is None or end is None:
            raise UnsupportedModelError(
                f"video_grid_thw: {type(self.model).__name__}'s config has no vision start / end token ids to tell "
                "its videos apart by, so policy.segments 'image' and 'frame' on video need video_grid_thw"
            )
        opens = input_ids == start
        depth = opens.long().cumsum(-1) - (input_ids == end).long().cumsum(-1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        outer = torch.where(opens & (depth == 1), positions, torch.zeros_like(positions)).cummax(-1).values
        keys = []
        for row, run in runs:
            if int(depth[row, run[0]]) < 2:
                raise UnsupportedModelError(
                    "video_grid_thw: a video's frames are not inside one outer <|vision_start|> ... <|vision_end|> "
                    "(as Qwen3VLProcessor writes them), so which frames make one video needs video_grid_thw"
                )
            keys.append((row, int(outer[row, run[0]])))
        return torch.unique(torch.tensor(keys).view(-1, 2), dim=0, return_inverse=True)[1].tolist()

    def video_frames(self, inputs: Mapping[str, Any], video_mask: torch.Tensor) -> torch.Tensor:
        """Each run is one frame: a token's frame is the rank of its run among its video's runs."""
        frames = torch.zeros(video_mask.shape, dtype=torch.long, device=video_mask.device)
        seen: dict[int, int] = {}
        for (row, run), video in zip(video_runs(video_mask), self.video_of_runs(inputs, video_mask)):
            frames[row, run] = seen.setdefault(video, 0)
            seen[video] += 1
        return frames

    def prompt_segments(
        self, inputs: Mapping[str, Any], vision_mask: torch.Tensor, unit: str = "image"
    ) -> torch.Tensor:
        """Under "image" a whole video is one segment (its runs, one per frame, merged); under "frame"
        each run is a frame of its own (the base class's)."""
        video = vision_mask & self.video_mask(inputs["input_ids"])
        segments = super().prompt_segments(inputs, vision_mask, unit)
        if unit != "image" or not bool(video.any()):
            return segments
        merged = segments.clone()
        first: dict[int, int] = {}
        for (row, run), video_index in zip(video_runs(video), self.video_of_runs(inputs, video)):
            merged[row, run] = first.setdefault(video_index, int(segments[row, run[0]]))
        out = torch.full_like(merged, -1)
        for row in range(merged.shape[0]):
            valid = merged[row] >= 0
            out[row][valid] = torch.searchsorted(merged[row][valid].unique(), merged[row][valid])
        return out


class Qwen3VLAdapter(TimestampedVideoAdapter):
    """Qwen3-VL: Qwen2.5-VL's image tokens and layout, with DeepStack's layers kept whole in prefill."""

    name = "qwen3_vl"
    architectures = ("Qwen3VLForConditionalGeneration", "Qwen3VLModel")

    def deepstack_layers(self) -> list[int]:
        """The decoder layers after which DeepStack adds vision features (the first few, one per block)."""
        blocks = getattr(self.config.vision_config, "deepstack_visual_indexes", None) or ()
        return list(range(min(len(blocks), self.num_layers)))

    def unprunable_layers(self, stage: str) -> dict[int, str]:
        """Besides the base class's: in the prefill and input stages, the DeepStack layers, whose outputs receive vision
        features at every vision position of the prompt (tokens that left could not take them)."""
        out = super().unprunable_layers(stage)
        if stage in ("prefill", "input"):
            for idx in self.deepstack_layers():
                out.setdefault(idx, "adds DeepStack vision features at every vision position of the prompt")
        return out


class Qwen3_5Adapter(TimestampedVideoAdapter):
    """Qwen3.5: Qwen3-VL's image tokens; linear-attention layers hold no KV cache (never pruned)."""

    name = "qwen3_5"
    architectures = ("Qwen3_5ForConditionalGeneration", "Qwen3_5Model")

    def unprunable_layers(self, stage: str) -> dict[int, str]:
        """The linear-attention layers (the base class's); in prefill, every layer: the linear layers
        that follow carry a recurrent state over every token, which tokens leaving the sequence
        would change, and they give no statistics to rank the tokens by."""
        out = super().unprunable_layers(stage)
        if stage in ("prefill", "input"):
            for idx in range(self.num_layers):
                out.setdefault(idx, "belongs to a hybrid stack whose linear-attention layers carry every token")
        return out


ADAPTERS = [Qwen3VLAdapter, Qwen3_5Adapter]
