"""Timers of a session's parts, fed by its public events (`plphp.backends.events`).

A timer is a `SessionObserver`: subscribe it (`plphp.apply(model, policy, observers=[timer])` or
`session.subscribe(timer)`) and read its seconds afterwards; they add up over the prefills it saw.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from plphp.backends.events import SessionObserver


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work (CUDA only; CPU work is synchronous)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class CompressTimer(SessionObserver):
    """Seconds of the compression step (allocation, selection, compression; in the prefill stage, the
    report), from `on_compress_start` to `on_compress_end`, with the device synchronized at both ends.

    Attributes:
        compress_s: summed over the prefills seen.
    """

    def __init__(self, device: Any = None):
        self.device = torch.device(device) if device is not None else None
        self.compress_s = 0.0
        self._started: dict[str, float] = {}

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def _begin(self, part: str) -> None:
        self._started[part] = self._now()

    def _seconds(self, part: str) -> float:
        """Seconds since `_begin(part)` (0 when the part began before this observer was subscribed)."""
        started = self._started.pop(part, None)
        return self._now() - started if started is not None else 0.0

    def on_compress_start(self, session: Any) -> None:
        self._begin("compress")

    def on_compress_end(self, session: Any, report: Any) -> None:
        self.compress_s += self._seconds("compress")


class PrefillTimer(CompressTimer):
    """The compression step, and also the prefill setup (cache layers, vision mask, image segments:
    `on_prefill_start` to `on_prompt`) and the collector's calls (`on_collect_start` to `on_layer_stats`).

    Attributes:
        setup_s, collect_s, compress_s: seconds, summed over the prefills seen.
        collect_calls: collector calls seen.
    """

    def __init__(self, device: Any = None):
        super().__init__(device)
        self.setup_s = 0.0
        self.collect_s = 0.0
        self.collect_calls = 0

    def on_prefill_start(self, session: Any) -> None:
        self._begin("setup")

    def on_prompt(self, session: Any, prompt: Any) -> None:
        self.setup_s += self._seconds("setup")

    def on_collect_start(self, session: Any, layer_idx: int) -> None:
        self._begin("collect")

    def on_layer_stats(self, session: Any, layer_idx: int, stats: Any) -> None:
        self.collect_s += self._seconds("collect")
        self.collect_calls += 1
