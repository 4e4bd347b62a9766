"""Vision-tower statistics for the input stage: the attention of one tower layer, as it runs.

The session routes the vision tower's attention through its own function (vision calls carry no
`layer_idx`); `TowerCapture` keeps, for the one tower layer a collector reads, a per-token
statistic of each call: the attention from the [CLS] token where the tower has one (CLIP), else the
mean attention each token receives (SigLIP, the Qwen towers). Adapters then map the per-call
statistics to vision-token positions (`ModelAdapter.tower_statistics`). See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import torch

from plphp.backends.layout import TokenLayout, anyres_layout

#: Queries per block when the mean received attention is summed (bounds memory at `H · block · n`).
QUERY_BLOCK = 256


def cls_attention(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """Attention from token 0 ([CLS]) to every token, mean over heads.

    Args:
        query: `[b, H, n, D]`; key: `[b, H_kv, n, D]`.

    Returns:
        `[b, n]` float32.
    """
    key = _repeat_kv(key, query.shape[1])
    logits = (query[:, :, :1].float() @ key.float().transpose(-1, -2)) * scaling  # [b, H, 1, n]
    return torch.softmax(logits, dim=-1)[:, :, 0].mean(1)


def received_attention(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """Mean attention each token receives over every query and head (bidirectional attention).

    Args:
        query: `[b, H, n, D]`; key: `[b, H_kv, n, D]`.

    Returns:
        `[b, n]` float32; each row sums to 1.
    """
    key = _repeat_kv(key, query.shape[1]).float()
    total = query.new_zeros(query.shape[0], key.shape[2], dtype=torch.float32)
    for start in range(0, query.shape[2], QUERY_BLOCK):
        block = query[:, :, start : start + QUERY_BLOCK].float()
        total += torch.softmax((block @ key.transpose(-1, -2)) * scaling, dim=-1).sum((1, 2))
    return total / (query.shape[1] * query.shape[2])


def _repeat_kv(key: torch.Tensor, heads: int) -> torch.Tensor:
    groups = heads // key.shape[1]
    return key.repeat_interleave(groups, dim=1) if groups > 1 else key


class TowerCapture:
    """Keeps the statistic of one tower layer's attention calls during one prefill.

    Args:
        module: the attention module of the layer to read.
        from_cls: True for attention from the [CLS] token, False for the mean received attention.
    """

    def __init__(self, module: torch.nn.Module, from_cls: bool):
        self.module = module
        self.from_cls = from_cls
        self.calls: list[torch.Tensor] = []

    def observe(self, module: Any, query: torch.Tensor, key: torch.Tensor, scaling: float | None, kwargs: dict) -> None:
        """One vision attention call: keep `[b, n]` statistics when it is the layer's."""
        if module is not self.module:
            return
        scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
        statistic = cls_attention if self.from_cls else received_attention
        bounds = kwargs.get("cu_seq_lens_q")
        with torch.no_grad():
            if bounds is None:  # one call per image (or per window), or a batch of tiles
                self.calls.append(statistic(query, key, scaling))
                return
            # Flash kernels take every image packed in one call: split it at the sequence bounds.
            edges = [int(v) for v in bounds]
            parts = [
                statistic(query[:, :, a:b], key[:, :, a:b], scaling) for a, b in zip(edges[:-1], edges[1:], strict=True)
            ]
            self.calls.append(torch.cat(parts, dim=-1))


def match_patches(
    statistics: torch.Tensor, patches: torch.Tensor, tokens: list[torch.Tensor], newline: torch.Tensor
) -> list[torch.Tensor]:
    """Map per-patch statistics to vision tokens by their features (any-resolution models under
    `generate()`, which consumes `image_sizes`): a token's feature is a copy of one projected patch (in a
    OneVision grid downscaled beyond `anyres_max_N`, a bilinear mix: the nearest patch is taken), and
    copies of `newline` are no patch (NaN).

    Args:
        statistics: `[P]` one value per projected patch; patches: `[P, D]` their projected features;
        tokens: per image `[N_i, D]` its vision tokens' features; newline: `[D]` the newline embedding.
    """
    patches = patches.float()
    out = []
    for features in tokens:
        features = features.float()
        distance = torch.cat([torch.cdist(chunk, patches) for chunk in features.split(1024)])
        values = statistics[distance.argmin(-1).to(statistics.device)].clone()
        values[(features == newline.to(features)).all(-1).to(values.device)] = float("nan")
        out.append(values)
    return out


def newline_layout(features: torch.Tensor, newline: torch.Tensor, side: int) -> TokenLayout:
    """An any-resolution image's layout read off its token features `[N, D]`: the base `side × side`
    square, then rows of the tile grid, each ended by a copy of `newline` `[D]`."""
    is_newline = (features == newline.to(features)).all(-1)
    base = side * side
    rows = int(is_newline[base:].sum())
    if rows <= 1 and features.shape[0] == base + 1:
        return anyres_layout(side, None, None)
    cols = (features.shape[0] - base) // max(rows, 1) - 1
    return anyres_layout(side, (1, 1), (rows, cols))
