"""The correctness contract of each component kind's output, checked in one place.

The session runs the cheap checks on every call (`check_stats` shapes, `check_retention`,
`check_keep_indices`, `check_shared_keep`); `plphp.testing` runs all of them, the costly ones
included (`full=True`: finite scores at vision positions; determinism of a selector). Each raises
`PolicyContractError` naming the component, the layer and what is wrong. See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import torch

from plphp.errors import PolicyContractError
from plphp.stats import LayerStats, PromptInfo


def check_stats(stats: Any, prompt: PromptInfo, who: str, full: bool = False) -> None:
    """Check a collector's output: a `LayerStats` with `scores` `[B, H or H_kv, L]` and `vision_attention` `[B]`.

    Args:
        stats: what the collector returned.
        prompt: the prompt it scored.
        who: names the collector and layer in the message.
        full: also check that the scores are finite at vision positions (reads every score).
    """
    if not isinstance(stats, LayerStats):
        raise PolicyContractError(f"{who} returned {type(stats).__name__}; expected LayerStats")
    scores, gamma = stats.scores, stats.vision_attention
    if not isinstance(scores, torch.Tensor) or not isinstance(gamma, torch.Tensor):
        kinds = f"scores {type(scores).__name__}, vision_attention {type(gamma).__name__}"
        raise PolicyContractError(f"{who} returned LayerStats holding {kinds}; expected tensors")
    batch, length = prompt.batch_size, prompt.length
    heads = scores.shape[1] if scores.dim() == 3 else None
    if (
        scores.dim() != 3
        or heads not in (prompt.num_heads, prompt.num_kv_heads)
        or scores.shape[::2] != (batch, length)
    ):
        raise PolicyContractError(
            f"{who} returned scores of shape {tuple(scores.shape)}; expected [B={batch}, "
            f"H={prompt.num_heads} or H_kv={prompt.num_kv_heads}, L={length}]"
        )
    if tuple(gamma.shape) != (batch,):
        raise PolicyContractError(
            f"{who} returned vision_attention of shape {tuple(gamma.shape)}; expected [B={batch}]"
        )
    if full:
        vision = prompt.vision_mask.to(scores.device)[:, None, :].expand_as(scores)
        if not torch.isfinite(scores[vision]).all():
            raise PolicyContractError(f"{who} returned scores that are not finite at vision positions")


def check_retention(rates: Any, prompt: PromptInfo, who: str) -> None:
    """Check an allocator's output: a `[num_layers, B]` tensor of retention rates in [0, 1]."""
    want = (prompt.num_layers, prompt.batch_size)
    if not isinstance(rates, torch.Tensor) or tuple(rates.shape) != want:
        shape = tuple(rates.shape) if isinstance(rates, torch.Tensor) else type(rates).__name__
        raise PolicyContractError(f"{who} returned {shape}; expected a tensor of shape {list(want)}")
    if torch.isnan(rates).any() or (rates < 0).any() or (rates > 1).any():
        raise PolicyContractError(f"{who} returned retention outside [0, 1]: {rates.tolist()}")


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
    if not isinstance(keep, torch.Tensor):
        raise PolicyContractError(
            f"{who} returned {type(keep).__name__}; expected a long tensor of shape [{batch}, {kv_heads}, k]"
        )
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


def check_shared_keep(keep: torch.Tensor, who: str, why: str) -> None:
    """Check that every KV head keeps the same tokens (`keep` `[B, H_kv, k]`); `why` says who needs it."""
    if keep.shape[1] > 1 and not torch.equal(keep, keep[:, :1].expand_as(keep)):
        raise PolicyContractError(f"{who} kept different tokens in different heads; {why}")


def check_deterministic(first: torch.Tensor, second: torch.Tensor, who: str) -> None:
    """Check that two calls of a selector on the same input kept the same tokens."""
    if not torch.equal(first, second):
        raise PolicyContractError(f"{who} is not deterministic: two calls on the same input kept different tokens")


def check_merge(assignment: Any, keep_budget: list[int], prompt: PromptInfo, who: str) -> None:
    """Check a merger's output (`plphp.components.Merger`): a `[B, L]` long assignment in which

    - text and padding are -1 (never merged), and every other entry is a vision position of the
      same sample and the same image (a token folds into an output token of its own image);
    - output tokens are fixed points (`assignment[p] == p`), and every assigned target is one;
    - sample `b` yields exactly `keep_budget[b]` output tokens.

    Every input token is then accounted for exactly once: it is an output token, folds into one, or
    is discarded (-1).
    """
    batch, length = prompt.batch_size, prompt.length
    if (
        not isinstance(assignment, torch.Tensor)
        or assignment.dtype != torch.long
        or tuple(assignment.shape)
        != (
            batch,
            length,
        )
    ):
        shape = tuple(assignment.shape) if isinstance(assignment, torch.Tensor) else type(assignment).__name__
        raise PolicyContractError(f"{who} returned {shape}; expected a long tensor of shape [{batch}, {length}]")
    vision = prompt.vision_mask.to(assignment.device)
    if (assignment[~vision] != -1).any():
        raise PolicyContractError(f"{who} assigned a text or padding position (text is never merged)")
    assigned = assignment >= 0
    if (assignment >= length).any():
        raise PolicyContractError(f"{who} assigned a token to a position beyond the prompt length {length}")
    target = assignment.clamp(min=0)
    segments = prompt.segment_ids.to(assignment.device)
    if (assigned & ~vision.gather(1, target)).any() or (assigned & (segments.gather(1, target) != segments)).any():
        raise PolicyContractError(f"{who} folded a token into a position that is not a vision token of its image")
    if (assigned & (assignment.gather(1, target) != assignment)).any():
        raise PolicyContractError(f"{who} folded a token into a target that is not an output token of its own")
    positions = torch.arange(length, device=assignment.device)
    outputs = (assignment == positions).sum(-1)
    want = torch.tensor(keep_budget, device=assignment.device)
    if not torch.equal(outputs, want):
        raise PolicyContractError(
            f"{who} produced {outputs.tolist()} output tokens per sample; the budget is {keep_budget}"
        )
