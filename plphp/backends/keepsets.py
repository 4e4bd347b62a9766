"""Keep-sets as tensors, and the report of a layer that keeps everything: shared by both stages."""

from __future__ import annotations

from typing import Any

import torch

from plphp.report import LayerReport
from plphp.stats import PromptInfo


def whole_layer_report(
    layer_idx: int, layer: Any, retention: torch.Tensor, vision_attention: torch.Tensor, prompt: PromptInfo
) -> LayerReport:
    """The report of a layer that kept every vision token."""
    num_vision = prompt.num_vision.tolist()
    nbytes = layer_nbytes(layer)
    return LayerReport(
        layer_idx=layer_idx,
        pruned=False,
        retention=retention,
        budget=num_vision,
        kept=torch.tensor(num_vision, device=retention.device)[:, None].expand(-1, prompt.num_kv_heads),
        kept_positions=None,
        vision_attention=vision_attention,
        kv_bytes_before=nbytes,
        kv_bytes_after=nbytes,
        physical_length=layer.keys.shape[-2] if layer.keys is not None else 0,
    )


def layer_nbytes(layer: Any) -> int:
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if keys is None or values is None:
        return 0
    return keys.numel() * keys.element_size() + values.numel() * values.element_size()
