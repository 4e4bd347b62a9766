"""Tensor helpers shared by policy components, plugins and the backend.

A component imports these (and the types of `plphp.stats`), never another policy module: editing
one policy then never changes another. Every function is pure and documents its shapes; `B` is the
batch, `H` query heads, `H_kv` key/value heads, `L` the prompt length.
"""

from __future__ import annotations

import math

import torch

from plphp.stats import PromptInfo


def kept_count(retention: float, num_tokens: int) -> int:
    """How many of `num_tokens` vision tokens a retention rate keeps: `⌈retention · num_tokens⌉`.

    A tolerance of 1e-6 per token keeps float noise from adding a token: 0.3 · 10 = 3.0000000000000004,
    and a float32 0.3 (0.30000001192...) · 160 = 48.0000019.
    """
    if num_tokens <= 0:
        return 0
    return max(0, min(num_tokens, math.ceil(retention * num_tokens - 1e-6 * num_tokens)))


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


def segment_topk(scores: torch.Tensor, segments: list[torch.Tensor], retention: float) -> list[torch.Tensor]:
    """Per head, the top `⌈retention · len(segment)⌉` positions of each segment, concatenated.

    Args:
        scores: `[H_kv, L]` one sample's scores; segments: positions of each image.

    Returns:
        One unsorted index tensor per head.
    """
    picked = []
    for segment in segments:
        k = kept_count(retention, len(segment))
        top = scores[:, segment].topk(k, dim=-1).indices  # [H_kv, k]
        picked.append(segment[top])
    if not picked:
        return [scores.new_empty(0, dtype=torch.long)] * scores.shape[0]
    return list(torch.cat(picked, dim=-1))


def segment_sample(segments: list[torch.Tensor], retention: float, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random tokens of each segment, `kept_count(retention, len(segment))` of each.

    Args:
        segments: the positions of each image's (segment's) vision tokens, as `PromptInfo.segments(b)`.
        retention: the share each segment keeps.
        generator: the seeded generator the draws come from (advanced by one permutation per segment).

    Returns:
        `[k]` the kept positions, segment by segment (empty when there are no segments).
    """
    picked = [
        segment[
            torch.randperm(len(segment), generator=generator)[: kept_count(retention, len(segment))].to(segment.device)
        ]
        for segment in segments
    ]
    return torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)


def window_attention(
    query: torch.Tensor, key: torch.Tensor, key_valid: torch.Tensor, window: int, scaling: float
) -> torch.Tensor:
    """Softmax attention of the last `window` queries over all keys, with the causal and padding mask.

    Args:
        query: `[B, H, L, D]`; key: `[B, H_kv, L, D]`; key_valid: `[B, L]` bool.

    Returns:
        `[B, H, w, L]` attention probabilities (float32), `w = min(window, L)`.
    """
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    w = min(window, length)
    q = query[:, :, -w:, :].float().reshape(batch, kv_heads, (heads // kv_heads) * w, dim)
    logits = (q @ key.float().transpose(-1, -2)) * scaling  # [B, H_kv, G*w, L]
    logits = logits.reshape(batch, heads, w, length)
    query_pos = torch.arange(length - w, length, device=query.device)
    visible = key_valid[:, None, None, :] & (torch.arange(length, device=query.device) <= query_pos[:, None])
    return torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0)


def observers(prompt: PromptInfo, window: int | str) -> torch.Tensor:
    """`[B, w]` bool: which of the last `w` prompt positions vote (padding never does).

    `window` is a count of last tokens, or "question": the text tokens after each sample's last
    vision token (the last token alone for a sample without one).
    """
    positions = torch.arange(prompt.length, device=prompt.key_valid.device)
    if window == "question":
        last_vision = torch.where(prompt.vision_mask, positions, -1).amax(-1)  # [B]
        has_vision = (last_vision >= 0)[:, None]
        voting = prompt.key_valid & (positions > last_vision[:, None]) & has_vision
        voting[:, -1] |= prompt.key_valid[:, -1]
        first = int(torch.where(voting, positions, prompt.length).amin())
        return voting[:, first:]
    width = min(int(window), prompt.length)
    return prompt.key_valid[:, prompt.length - width :]


def scatter_mask(keep: torch.Tensor, length: int) -> torch.Tensor:
    """`[B, H_kv, L]` bool, True at the positions listed in `keep` (-1 entries ignored)."""
    mask = torch.zeros(*keep.shape[:2], length + 1, dtype=torch.bool, device=keep.device)
    mask.scatter_(2, torch.where(keep >= 0, keep, length), True)
    return mask[..., :length]


def keep_positions(keep_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept positions per row, ascending, padded to the longest row: `([B, H, n], valid [B, H, n])`."""
    length = keep_mask.shape[-1]
    order = torch.arange(length, device=keep_mask.device).expand_as(keep_mask)
    ranked = torch.where(keep_mask, order, order + length).sort(dim=-1).values
    width = int(keep_mask.sum(-1).max())
    ranked = ranked[..., :width]
    valid = ranked < length
    return torch.where(valid, ranked, 0), valid


def merge_features(features: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """The features after a merge: each output token the mean of the tokens assigned to it.

    Args:
        features: `[B, L, D]`; assignment: `[B, L]` long, the output position each token folds into
            (-1: none), output tokens being its fixed points (`plphp.components.Merger`).

    Returns:
        `[B, L, D]`: at output positions the mean over their tokens, elsewhere `features` unchanged.
    """
    batch, length, dim = features.shape
    target = torch.where(assignment >= 0, assignment, length)[..., None].expand(-1, -1, dim)
    sums = features.new_zeros(batch, length + 1, dim).scatter_add_(1, target, features)
    counts = features.new_zeros(batch, length + 1).scatter_add_(1, target[..., 0], torch.ones_like(features[..., 0]))
    merged = sums[:, :length] / counts[:, :length, None].clamp(min=1)
    is_output = assignment == torch.arange(length, device=assignment.device)
    return torch.where(is_output[..., None], merged, features)


def cosine_similarity(features: torch.Tensor) -> torch.Tensor:
    """`[N, N]` cosine similarity of `features` `[N, D]` (float32)."""
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    return unit @ unit.T
