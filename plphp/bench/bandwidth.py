"""The memory-bandwidth model of a decode step.

A decode step of a large model reads every weight it uses and the whole KV cache once, for a few
flops per byte, so its time is bounded below by `bytes read / bandwidth`. Pruning removes KV bytes;
the most it can save is the time to read them. With `t_0` the unpruned step measured in the same
run, `ΔKV` the KV bytes pruning removed and `BW` the measured bandwidth:

    ideal pruned step   t_ideal = t_0 − ΔKV / BW
    ideal speedup       t_0 / t_ideal
    bytes-per-step floor  (weight bytes + KV bytes) / BW     (the physical limit of any step)
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Bandwidth:
    """Measured bandwidth in bytes per second (median, min, max over repeats) and how."""

    read: float
    read_min: float
    read_max: float
    copy: float
    megabytes: int
    repeats: int

    def to_dict(self) -> dict[str, float]:
        return {
            "read_GBps": self.read / 1e9,
            "read_GBps_min": self.read_min / 1e9,
            "read_GBps_max": self.read_max / 1e9,
            "copy_GBps": self.copy / 1e9,
            "buffer_MB": self.megabytes,
            "repeats": self.repeats,
            "kernel": "read: torch.sum over a float32 buffer (bytes read / s); "
            "copy: dst.copy_(src) (bytes read + written / s)",
        }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_bandwidth(device: str | torch.device = "cpu", megabytes: int = 256, repeats: int = 5) -> Bandwidth:
    """Measure read bandwidth (a sum over a buffer far larger than the caches) and copy bandwidth.

    The read kernel is what a decode step does to weights and KV: stream them once. The buffer is
    `megabytes` large so that caches do not hold it; the first pass is a warm-up.
    """
    device = torch.device(device)
    numel = megabytes * 2**20 // 4
    source = torch.ones(numel, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    nbytes = source.numel() * source.element_size()
    reads, copies = [], []
    for i in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        source.sum()
        _synchronize(device)
        middle = time.perf_counter()
        target.copy_(source)
        _synchronize(device)
        end = time.perf_counter()
        if i:  # the first pass warms up (page faults, clocks)
            reads.append(nbytes / (middle - start))
            copies.append(2 * nbytes / (end - middle))
    return Bandwidth(
        read=statistics.median(reads),
        read_min=min(reads),
        read_max=max(reads),
        copy=statistics.median(copies),
        megabytes=megabytes,
        repeats=repeats,
    )


def ideal_step_seconds(unpruned_step: float, saved_kv_bytes: float, bandwidth: float) -> float:
    """`t_0 − ΔKV / BW`: the unpruned step less the time to read the KV bytes pruning removed."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    return unpruned_step - saved_kv_bytes / bandwidth


def ideal_speedup(unpruned_step: float, saved_kv_bytes: float, bandwidth: float) -> float:
    """`t_0 / t_ideal`; infinite when the saved bytes alone take longer than the measured step."""
    ideal = ideal_step_seconds(unpruned_step, saved_kv_bytes, bandwidth)
    return unpruned_step / ideal if ideal > 0 else float("inf")


def floor_step_seconds(weight_bytes: float, kv_bytes: float, bandwidth: float) -> float:
    """`(weights + KV) / BW`: no decode step can read its bytes faster."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    return (weight_bytes + kv_bytes) / bandwidth


def predict(
    weight_bytes: float,
    kv_bytes_per_token: float,
    context_tokens: int,
    sequences: int,
    kept_fraction: float,
    bandwidth: float,
) -> dict[str, float]:
    """The model's prediction for one decode step of `sequences` concurrent sequences.

    Args:
        weight_bytes: weights read per step (`ModelShape.decode_weight_bytes`).
        kv_bytes_per_token: KV bytes per cached token (`ModelShape.kv_bytes_per_token`).
        context_tokens: cached tokens per sequence (unpruned).
        sequences: concurrent sequences (batch).
        kept_fraction: share of the KV bytes that pruning keeps.
        bandwidth: bytes per second.

    Returns:
        Unpruned and pruned floor step seconds, the speedup, KV bytes before and after.
    """
    kv = kv_bytes_per_token * context_tokens * sequences
    kept = kv * kept_fraction
    unpruned = floor_step_seconds(weight_bytes, kv, bandwidth)
    pruned = floor_step_seconds(weight_bytes, kept, bandwidth)
    return {
        "sequences": sequences,
        "kv_bytes": kv,
        "kv_bytes_pruned": kept,
        "step_s": unpruned,
        "step_s_pruned": pruned,
        "speedup": unpruned / pruned,
        "tokens_per_s": sequences / unpruned,
        "tokens_per_s_pruned": sequences / pruned,
    }
