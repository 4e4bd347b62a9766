"""The tensors that flow between the backend and the policy components.

Shapes use `B` (batch), `H` (query heads), `H_kv` (key/value heads), `L` (prompt length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import torch

from plphp.errors import PolicyContractError


@dataclass(frozen=True)
class PromptInfo:
    """What a component may know about the prompt being prefilled.

    Attributes:
        vision_mask: `[B, L]` bool, True at vision (image / video) token positions.
        segment_ids: `[B, L]` long, the index of the image a vision token belongs to within its
            sample (0, 1, ...), -1 at text and padding positions.
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
        """Positions of each image's vision tokens in sample `batch_index`, in image order."""
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
    """

    scores: torch.Tensor
    vision_attention: torch.Tensor


def kept_count(retention: float, num_tokens: int) -> int:
    """How many of `num_tokens` vision tokens a retention rate keeps: `⌈retention · num_tokens⌉`.

    A tolerance of 1e-6 keeps float noise (0.3 · 10 = 3.0000000000000004) from adding a token.
    """
    if num_tokens <= 0:
        return 0
    return max(0, min(num_tokens, math.ceil(retention * num_tokens - 1e-6)))


def budget_per_sample(retention: torch.Tensor, prompt: PromptInfo) -> list[int]:
    """Vision tokens each sample keeps in one layer: the sum over its images of `kept_count`.

    Args:
        retention: `[B]` retention rate per sample.
        prompt: the prompt the layer belongs to.
    """
    return [
        sum(kept_count(float(retention[b]), len(segment)) for segment in prompt.segments(b))
        for b in range(prompt.batch_size)
    ]


def reduce_heads(scores: torch.Tensor, num_kv_heads: int, how: str = "mean") -> torch.Tensor:
    """Reduce per-query-head scores to one score per key/value head.

    Args:
        scores: `[B, H_s, L]`, with `H_s` a multiple of `num_kv_heads`.
        num_kv_heads: heads of the key/value cache.
        how: "mean" or "max" over the query heads of a group.

    Returns:
        `[B, H_kv, L]`.
    """
    batch, heads, length = scores.shape
    grouped = scores.reshape(batch, num_kv_heads, heads // num_kv_heads, length)
    return grouped.amax(2) if how == "max" else grouped.mean(2)


def pad_keep_indices(rows: list[list[torch.Tensor]], device: torch.device | str) -> torch.Tensor:
    """Stack per-(sample, head) index lists into `[B, H_kv, k_max]`, sorted, padded with -1."""
    width = max((len(idx) for heads in rows for idx in heads), default=0)
    out = torch.full((len(rows), len(rows[0]) if rows else 0, width), -1, dtype=torch.long, device=device)
    for b, heads in enumerate(rows):
        for h, idx in enumerate(heads):
            out[b, h, : len(idx)] = torch.sort(idx).values
    return out


def check_keep_indices(
    keep: torch.Tensor,
    prompt: PromptInfo,
    expected: list[int] | None,
    who: str,
    head_budgets: bool = False,
) -> None:
    """Check a selector's output against the contract, raising `PolicyContractError` with what is wrong.

    The contract: `[B, H_kv, k]` long; per (sample, head) the valid entries come first, ascending and
    unique, each a vision position of that sample; -1 pads the rest; when `expected` is given,
    sample `b` keeps exactly `expected[b]` tokens in every head, or, with `head_budgets` (heads
    keep different counts), `H_kv · expected[b]` tokens over its heads together.
    """
    batch, kv_heads = prompt.batch_size, prompt.num_kv_heads
    if keep.dtype != torch.long or keep.dim() != 3 or tuple(keep.shape[:2]) != (batch, kv_heads):
        raise PolicyContractError(
            f"{who} returned keep indices of shape {tuple(keep.shape)} and dtype {keep.dtype}; "
            f"expected a long tensor of shape [{batch}, {kv_heads}, k]"
        )
    valid = keep >= 0
    if (valid[..., 1:] & ~valid[..., :-1]).any():
        raise PolicyContractError(f"{who} returned -1 padding before a valid index; pad at the end only")
    if (keep >= prompt.length).any():
        raise PolicyContractError(f"{who} returned an index beyond the prompt length {prompt.length}")
    both = valid[..., 1:] & valid[..., :-1]
    if (both & (keep[..., 1:] <= keep[..., :-1])).any():
        raise PolicyContractError(f"{who} returned indices that are not sorted and unique")
    hits_vision = torch.gather(prompt.vision_mask[:, None, :].expand(-1, kv_heads, -1), 2, keep.clamp(min=0))
    if (valid & ~hits_vision).any():
        raise PolicyContractError(f"{who} returned a position that is not a vision token (text is never pruned)")
    if expected is not None and head_budgets:
        totals = valid.sum((1, 2))
        want = torch.tensor(expected, device=keep.device) * kv_heads
        if not torch.equal(totals, want):
            raise PolicyContractError(
                f"{who} kept {totals.tolist()} tokens per sample over its {kv_heads} KV heads; "
                f"the layer budget is {want.tolist()}"
            )
    elif expected is not None:
        counts = valid.sum(-1)
        want = torch.tensor(expected, device=keep.device)[:, None].expand_as(counts)
        if not torch.equal(counts, want):
            raise PolicyContractError(
                f"{who} kept {counts.tolist()} tokens per (sample, head); the budget is {expected}"
            )
