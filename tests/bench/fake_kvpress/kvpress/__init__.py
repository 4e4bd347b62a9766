"""A stand-in for NVIDIA kvpress: lets tests run the peer worker's protocol without the peer virtualenv.

Its presses have the interface the worker uses (`with press(model):`, `forward_hook`,
`compression_ratio`) and compress by kvpress's counts: `SnapKVPress` and `KnormPress` keep the
`int(L · (1 − c))` keys of smallest norm per head, `AdaKVPress` masks the others and keeps every
entry (as kvpress's AdaKV does). Only the synthetic prefill calls the hooks; decoding ignores masks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch


@contextmanager
def _applied(press, model):
    yield


def _kept(keys: torch.Tensor, compression_ratio: float) -> torch.Tensor:
    """`[B, H_kv, n]` positions kept per head."""
    count = max(1, int(keys.shape[2] * (1 - compression_ratio)))
    return (-keys.norm(dim=-1)).topk(count, dim=-1).indices


@dataclass
class KnormPress:
    compression_ratio: float = 0.0
    __call__ = _applied

    def forward_hook(self, module, inputs, kwargs, output):
        layer = kwargs["past_key_values"].layers[module.layer_idx]
        index = _kept(layer.keys, self.compression_ratio)[..., None].expand(-1, -1, -1, layer.keys.shape[-1])
        layer.keys, layer.values = layer.keys.gather(2, index), layer.values.gather(2, index)
        return output


@dataclass
class SnapKVPress(KnormPress):
    window_size: int = 64
    kernel_size: int = 5


@dataclass
class AdaKVPress:
    press: KnormPress
    alpha_safeguard: float = 0.2
    __call__ = _applied

    def forward_hook(self, module, inputs, kwargs, output):
        keys = kwargs["past_key_values"].layers[module.layer_idx].keys
        dropped = torch.ones(keys.shape[:3], dtype=torch.bool)
        dropped.scatter_(2, _kept(keys, self.press.compression_ratio), False)
        module.masked_key_indices = dropped.nonzero(as_tuple=True)
        return output
