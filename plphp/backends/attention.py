"""The attention implementations plphp wraps, and the mask factory that goes with each."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention, as the decoder models' own eager path computes it.

    Args:
        query: `[B, H, q, D]`; key, value: `[B, H_kv, kv, D]`; attention_mask: additive float or
            bool, broadcastable to `[B, H, q, kv]`.

    Returns:
        The output `[B, q, H, D]` and the attention weights `[B, H, q, kv]`.
    """
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1) if groups > 1 else key
    value = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    logits = (query @ key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attention_mask, torch.finfo(logits.dtype).min)
        else:
            logits = logits + attention_mask[..., : key.shape[-2]]
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout and module.training:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    output = (weights @ value).transpose(1, 2).contiguous()
    return output, weights


def base_attention(name: str) -> AttentionFn:
    """The attention function registered under `name` ("eager" is plphp's own eager path)."""
    if name == "eager":
        return eager_attention
    return ALL_ATTENTION_FUNCTIONS[name]


def uses_additive_mask(name: str) -> bool:
    """Whether the implementation takes float additive masks (eager) rather than boolean ones."""
    return name == "eager"


def takes_dense_mask(name: str) -> bool:
    """Whether the implementation accepts a dense `[B, H, q, kv]` mask (flash kernels do not)."""
    return name in ("sdpa", "eager")


def register(name: str, attention: AttentionFn, base_name: str) -> None:
    """Register `attention` under `name`, with the mask factory of `base_name` (else masks vanish)."""
    mask_name = base_name if base_name in ALL_MASK_ATTENTION_FUNCTIONS else "sdpa"
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[mask_name])


def unregister(name: str) -> None:
    """Remove `name` from both registries (transformers has no public unregister, so the class-wide
    mapping that `register` filled is edited directly)."""
    AttentionInterface._global_mapping.pop(name, None)
    AttentionMaskInterface._global_mapping.pop(name, None)
