"""What a prefill starts from: the cache's prunable layers and the prompt's vision positions, read
through the model's adapter (docs/architecture.md, "Data flow", step 2)."""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from plphp.backends.adapters import ModelAdapter
from plphp.backends.cache import PrunableLayer
from plphp.backends.reporting import empty_report
from plphp.policy import Policy
from plphp.report import PruningReport
from plphp.stats import PromptInfo


def read_prompt(
    adapter: ModelAdapter,
    policy: Policy,
    prunable: list[bool],
    cache: Cache,
    input_ids: torch.Tensor | None,
    attention_mask: Any,
    inputs: dict[str, Any],
) -> PromptInfo | PruningReport:
    """Put a `PrunableLayer` in each prunable layer of `cache` and read the prompt.

    Args:
        adapter: the model's adapter (vision positions, segments, shapes).
        policy: the session's policy (its `segments` and layer range).
        prunable: per decoder layer, whether its cache may be pruned.
        cache: the call's (empty) cache.
        input_ids: `[B, L]` the prompt.
        attention_mask: the call's 2-D padding mask, if any.
        inputs: the call's keyword inputs (`prompt_segments` reads `video_grid_thw` and the like).

    Returns:
        The `PromptInfo`, or an empty report saying why there is nothing to prune.
    """
    if input_ids is None:
        return empty_report(policy, 0, 0, [], "no input_ids were given, so no vision tokens were found")
    batch, length = input_ids.shape
    key_valid = torch.ones(batch, length, dtype=torch.bool, device=input_ids.device)
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
        key_valid = attention_mask[:, -length:].to(device=input_ids.device, dtype=torch.bool)
    padded = not bool(key_valid.all())
    while len(cache.layers) < adapter.num_layers:
        cache.layers.append(DynamicLayer())
    for idx in range(adapter.num_layers):
        if prunable[idx]:
            cache.layers[idx] = PrunableLayer(prompt_valid=key_valid if padded else None)
    vision_mask = adapter.vision_mask(input_ids) & key_valid
    if not bool(vision_mask.any()):
        reason = "the prompt holds no vision tokens; nothing was pruned"
        return empty_report(policy, batch, length, [0] * batch, reason)
    return PromptInfo(
        vision_mask=vision_mask,
        segment_ids=adapter.prompt_segments({**inputs, "input_ids": input_ids}, vision_mask, policy.segments),
        key_valid=key_valid,
        num_layers=adapter.num_layers,
        num_heads=adapter.num_heads,
        num_kv_heads=adapter.num_kv_heads,
        head_dim=adapter.head_dim,
        layer_range=(policy.start_layer, policy.end_layer or adapter.num_layers),
    )
