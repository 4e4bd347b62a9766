"""Pool merger: average pooling of each image's patch grid (the plain baseline of UniPruneBench and
VTC-Bench; LLaVA-OneVision pools video frames 2x2 the same way).

Every `stride × stride` block of patches of one tile (a grid of the image's layout: LLaVA's square,
LLaVA-NeXT's base image and its tile grid, Qwen's merged patches) becomes one token, the mean of its
features, placed at the block's first token in prompt order; blocks at a grid's edge may be smaller.
Tokens that are no patch (row newlines) stay as they are. The output count is fixed by the grid, so
the merger sets the budget itself and uses every vision token, whatever the selector kept.
"""

from __future__ import annotations

import torch
from pydantic import Field

from plphp.components import Merger, Params


class Pool(Merger):
    """`stride × stride` average pooling over each image's patch grid."""

    name = "pool"

    class Params(Params):
        stride: int = Field(2, ge=1, le=16, description="patches per block side")

    def _targets(self, segment: torch.Tensor, cells) -> torch.Tensor:
        """`[N]` the position each token of one image folds into."""
        stride = self.params.stride
        first: dict[tuple, int] = {}
        targets = []
        for position, cell in zip(segment.tolist(), cells, strict=True):
            block = ("token", position) if cell is None else (cell[0], cell[1] // stride, cell[2] // stride)
            targets.append(first.setdefault(block, position))
        return torch.tensor(targets, dtype=torch.long, device=segment.device)

    def budget(self, selected, vision, prompt) -> list[int]:
        return [
            sum(
                len(set(self._targets(segment, cells).tolist()))
                for segment, cells in zip(prompt.segments(b), vision.cells[b], strict=True)
            )
            for b in range(prompt.batch_size)
        ]

    def merge(self, keep, stats, vision, prompt) -> torch.Tensor:
        assignment = torch.full_like(prompt.segment_ids, -1)
        for b in range(prompt.batch_size):
            for segment, cells in zip(prompt.segments(b), vision.cells[b], strict=True):
                assignment[b, segment] = self._targets(segment, cells)
        return assignment
