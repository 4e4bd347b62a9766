"""The types that flow between the backend and the policy components: `PromptInfo`, `LayerStats`.

The tensor helpers that components share live in `plphp.ops`; the checks of their outputs in
`plphp.contract`.

Shapes use `B` (batch), `H` (query heads), `H_kv` (key/value heads), `L` (prompt length).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import torch


@dataclass(frozen=True)
class PromptInfo:
    """What a component may know about the prompt being prefilled.

    Attributes:
        vision_mask: `[B, L]` bool, True at vision (image / video) token positions.
        segment_ids: `[B, L]` long, the index of the segment a vision token belongs to within its
            sample (0, 1, ...), -1 at text and padding positions. A segment is an image (all its tiles
            included) or a video, or a video frame under the policy's `segments: frame`; each keeps its
            own share of the budget.
        key_valid: `[B, L]` bool, False at padding positions.
        num_layers: decoder layers of the language model.
        num_heads: query heads per layer.
        num_kv_heads: key/value heads per layer (`num_heads` is a multiple of it).
        head_dim: size of one head's key vector.
        layer_range: `(start, end)` of the layers the policy prunes (`start ≤ l < end`); depth-aware
            allocators (pyramids) spread their budget over it. None means all layers.
    """

    vision_mask: torch.Tensor
    segment_ids: torch.Tensor
    key_valid: torch.Tensor
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    layer_range: tuple[int, int] | None = None

    def to(self, device: torch.device | str) -> PromptInfo:
        """The same prompt with its tensors on `device` (layers may live on different devices)."""
        if self.vision_mask.device == torch.device(device):
            return self
        return replace(
            self,
            vision_mask=self.vision_mask.to(device),
            segment_ids=self.segment_ids.to(device),
            key_valid=self.key_valid.to(device),
        )

    @property
    def batch_size(self) -> int:
        return self.vision_mask.shape[0]

    @property
    def length(self) -> int:
        return self.vision_mask.shape[1]

    @property
    def num_vision(self) -> torch.Tensor:
        """`[B]` number of vision tokens per sample."""
        return self.vision_mask.sum(-1)

    @property
    def pruned_layers(self) -> range:
        """The layers the policy prunes, clipped to the model's depth."""
        start, end = self.layer_range or (0, self.num_layers)
        return range(min(start, self.num_layers), min(end, self.num_layers))

    @property
    def group_size(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_heads // self.num_kv_heads

    def segments(self, batch_index: int) -> list[torch.Tensor]:
        """Positions of each segment's (image's, video's or frame's) vision tokens in sample `batch_index`, in order."""
        return self._segments[batch_index]

    @cached_property
    def _segments(self) -> list[list[torch.Tensor]]:
        out = []
        for ids in self.segment_ids:
            count = int(ids.max().item()) + 1 if ids.numel() else 0
            out.append([torch.nonzero(ids == s).flatten() for s in range(count)])
        return out


@dataclass
class LayerStats:
    """Attention statistics of one decoder layer, collected during prefill.

    Attributes:
        scores: `[B, H_s, L]` importance of every key position, per head; `H_s` is `num_heads`
            (query-based collectors) or `num_kv_heads` (key-only collectors). Only vision positions
            are read by selectors.
        vision_attention: `[B]` share of the observation queries' attention that lands on vision
            tokens, averaged over heads (PLPHP's `γ_l`); NaN when the collector does not measure it.
        features: `[B, L, D]` the projected vision features at their prompt positions (input stage
            only, for selectors and mergers that compare tokens); None elsewhere.
    """

    scores: torch.Tensor
    vision_attention: torch.Tensor
    features: torch.Tensor | None = None


#: One vision token's place on its image: `(tile, row, col)` of the patch grid, or None for a token
#: that is no patch (a row newline, a CLS token).
Cell = tuple[int, int, int] | None


@dataclass(frozen=True)
class VisionStats:
    """What the input stage knows about the vision tokens before the decoder's first layer.

    Attributes:
        features: `[B, L, D]` the projected vision features (the decoder's input embeddings) at
            their prompt positions; text rows hold the text embeddings.
        tower_attention: `[B, L]` the vision tower's attention statistic at the collector's tower
            layer, mapped to vision-token positions: attention from the [CLS] token where the tower
            has one (CLIP), else the mean attention each patch receives (SigLIP, the Qwen towers);
            NaN at text positions and at vision tokens that are no patch. None when not captured.
        cells: per sample, per image (prompt order), per vision token its `Cell`; from the
            adapter's layout of each image (a strip where the geometry is unknown).
    """

    features: torch.Tensor
    tower_attention: torch.Tensor | None
    cells: tuple[tuple[tuple[Cell, ...], ...], ...]
