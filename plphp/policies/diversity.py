"""Diversity selector (DivPrune, Alvar et al. 2025, "DivPrune: Diversity-based Visual Token Pruning
for Large Multimodal Models", arXiv 2503.02175).

Keeps, per image, `k = ⌈r · N_i⌉` tokens that are far apart in feature space: the max–min diversity
problem (maximise the smallest pairwise distance of the kept set) on the cosine distance
`d(u, v) = 1 − cos(u, v)` of the projected features, solved greedily: first the token whose nearest
other token is farthest, then, one at a time, the token whose distance to the kept set (to its
nearest kept token) is largest.

What greedy guarantees: each step is optimal (no other token lies farther from the kept set), and,
since `√d` is a metric (the chordal distance over √2), the kept set's smallest `√d` is at least half
the optimum's, so its smallest cosine distance is at least a quarter of the optimum's; it is not
optimal in general.
"""

from __future__ import annotations

import torch

from plphp.components import Params, Selector
from plphp.errors import ConfigError
from plphp.ops import cosine_similarity, kept_count, pad_keep_indices


def greedy_max_min(distance: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max–min choice of `k` of `N` items from a `[N, N]` distance matrix; indices in pick order."""
    count = distance.shape[0]
    k = min(k, count)
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=distance.device)
    others = distance + torch.diag(torch.full((count,), float("inf"), device=distance.device))
    picked = [int(others.min(-1).values.argmax())]
    to_kept = distance[picked[0]].clone()  # [N] distance of each item to its nearest kept one
    for _ in range(k - 1):
        to_kept[picked] = float("-inf")
        nxt = int(to_kept.argmax())
        picked.append(nxt)
        to_kept = torch.minimum(to_kept, distance[nxt])
    return torch.tensor(picked, device=distance.device)


class Diversity(Selector):
    """Per image, the greedy max–min diverse set of vision tokens (cosine distance of the features)."""

    name = "diversity"
    per_head = False

    class Params(Params):
        pass

    def select(self, stats, retention, prompt, layer_idx) -> torch.Tensor:
        if stats.features is None:
            raise ConfigError(
                "policy.selector: 'diversity' compares the projected features, which only stage 'input' has; "
                "use it with an input-stage collector (features, cls_attention)"
            )
        rows = []
        for b in range(prompt.batch_size):
            picked = []
            for segment in prompt.segments(b):
                distance = 1.0 - cosine_similarity(stats.features[b, segment.to(stats.features.device)])
                chosen = greedy_max_min(distance, kept_count(float(retention[b]), len(segment)))
                picked.append(segment[chosen.to(segment.device)])
            kept = torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)
            rows.append([kept] * prompt.num_kv_heads)
        return pad_keep_indices(rows, prompt.vision_mask.device)
