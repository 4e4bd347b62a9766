"""Video frames as segments (`segments: frame`): the token runs of videos, cut into frames.

Adapters use these to answer `ModelAdapter.video_frames`; `split_segments` turns the frames into
segments of their own (docs/concepts.md, "Video").
"""

from __future__ import annotations

import torch

from plphp.errors import UnsupportedModelError


def split_segments(segments: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """Split each segment into its parts: `[B, L]` segments renumbered by (segment, part), in prompt order.

    Args:
        segments: `[B, L]` segment ids (-1 outside vision tokens), ascending along each row.
        parts: `[B, L]` the part of its segment each token is in (0, 1, ...), ascending within a segment.
    """
    vision = segments >= 0
    key = segments * (int(parts.max()) + 1) + parts
    out = torch.full_like(segments, -1)
    for row in range(segments.shape[0]):
        keys = key[row][vision[row]]
        out[row][vision[row]] = torch.searchsorted(keys.unique(), keys)
    return out


def video_runs(video_mask: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Every maximal run of video tokens, in batch order (sample 0's first): `(row, positions)`.

    One run is one video wherever videos are framed by other tokens (every architecture here).
    """
    runs = []
    for row, mask in enumerate(video_mask):
        positions = mask.nonzero().flatten()
        if positions.numel():
            breaks = (positions[1:] - positions[:-1] != 1).nonzero().flatten() + 1
            runs.extend((row, run) for run in torch.tensor_split(positions, breaks.tolist()))
    return runs


def fixed_frames(video_mask: torch.Tensor, per_frame: int, trailer: int = 0) -> torch.Tensor:
    """`[B, L]` frame index of each video token where every frame has `per_frame` tokens.

    Args:
        video_mask: `[B, L]` the video positions.
        per_frame: tokens per frame.
        trailer: tokens after the last frame (LLaVA-OneVision's newline), counted in the last frame.
    """
    frames = torch.zeros(video_mask.shape, dtype=torch.long, device=video_mask.device)
    for row, run in video_runs(video_mask):
        count = (len(run) - trailer) // per_frame
        if count < 1 or count * per_frame + trailer != len(run):
            raise UnsupportedModelError(
                f"video_mask: a video of {len(run)} tokens is not a whole number of {per_frame}-token frames"
                + (f" plus {trailer}" if trailer else "")
            )
        index = torch.arange(len(run), device=run.device) // per_frame
        frames[row, run] = index.clamp(max=count - 1)
    return frames
