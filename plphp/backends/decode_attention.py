"""One-query attention that reads each KV head once: the decode path of pruned layers.

A decoding step has one query token. With grouped-query attention, the `G = H / H_kv` query heads
of a group share one key and value head, so the step is, per (sample, KV head), two small matrix
products:

    scores  = Q_g K^T · scale        Q_g: [G, D], K: [L, D]      ->  [G, L]
    weights = softmax(scores)                                     (float32)
    output  = weights V              V: [L, D]                   ->  [G, D]

Each is one batched product over `B · H_kv` (the queries are a view `[B, H_kv, G, D]`, the keys a
view of the cache's buffer): every key and value is read once, not once per query head as a kernel
that repeats the KV heads (`repeat_kv`) or walks the query heads does. Nothing copies the cache.

Slots that hold nothing (short rows of a batch whose samples keep different counts, left padding)
are masked only in the column range where some row is invalid (`valid_span`); elsewhere every row
sees every slot. See docs/architecture.md, "The decode path of pruned layers".

On the CPU in float32 the same computation runs in plphp's native kernel (`plphp.backends.native`:
one pass over the cache, the group's rows sharing each key and value row read), where it is built;
elsewhere, and where it is not, through torch's batched products (`torch_grouped_decode_attention`).
"""

from __future__ import annotations

import torch

from plphp.backends import native


def invalid_span(valid: torch.Tensor | None) -> tuple[int, int] | None:
    """The columns `[lo, hi)` outside which every row of `valid` `[B, 1 or H_kv, L]` is True.

    Returns:
        None when every slot of every row is valid.
    """
    if valid is None:
        return None
    columns = (~valid).flatten(0, -2).any(0)  # [L]
    invalid = columns.nonzero()
    if invalid.numel() == 0:
        return None
    return int(invalid[0]), int(invalid[-1]) + 1


def grouped_decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float,
    valid: torch.Tensor | None = None,
    valid_span: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Softmax attention of one query token per head against a layer's whole cache: the native
    kernel where it applies (float32 on the CPU), else `torch_grouped_decode_attention`, whose
    arguments and result it shares."""
    output = native.decode_attention(query, key, value, scaling, valid, valid_span)
    if output is not None:
        return output
    return torch_grouped_decode_attention(query, key, value, scaling, valid, valid_span)


def torch_grouped_decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float,
    valid: torch.Tensor | None = None,
    valid_span: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Softmax attention of one query token per head against a layer's whole cache.

    Scores are computed in the inputs' dtype and normalised in float32, as the models' eager
    attention does; float32, float16 and bfloat16 inputs are accepted.

    Args:
        query: `[B, H, 1, D]` post-RoPE queries, `H` a multiple of `H_kv`.
        key: `[B, H_kv, L, D]` (a view of the cache's buffer is fine: rows need only be contiguous
            in `D`).
        value: `[B, H_kv, L, D]`, likewise.
        scaling: the softmax scale.
        valid: `[B, 1 or H_kv, L]` bool, False at slots no query may see; None when all are visible.
        valid_span: `[lo, hi)`, the columns where `valid` has a False (`invalid_span(valid)`); the
            mask is applied there only. None applies it to all columns.

    Returns:
        The output `[B, 1, H, D]`, laid out as the transformers attention functions return it.
    """
    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)  # [B, H_kv, G, D], a view
    scores = torch.matmul(grouped, key.transpose(-1, -2))  # [B, H_kv, G, L]
    scores.mul_(scaling)
    if valid is not None:
        lo, hi = valid_span if valid_span is not None else (0, key.shape[-2])
        if hi > lo:
            hidden = ~valid[:, :, None, lo:hi]  # [B, 1 or H_kv, 1, hi - lo], broadcast over the group
            scores[..., lo:hi].masked_fill_(hidden, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    output = torch.matmul(weights, value)  # [B, H_kv, G, D]
    return output.reshape(batch, 1, heads, head_dim)
