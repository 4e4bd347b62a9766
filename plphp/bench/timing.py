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


class AttentionTimer(SessionObserver):
    """Seconds and KV bytes of each decoder layer's attention call in decoding steps, from
    `on_decode_attention` to `on_decode_attention_end`, split into the layers pruning shortened and
    the others (by the session's report).

    On CPU the clock is read at both ends; on CUDA, events are recorded on the stream (no
    synchronization inside the step) and read by `totals`.

    Attributes:
        calls: attention calls timed.
    """

    def __init__(self, device: Any = None):
        self.device = torch.device(device) if device is not None else None
        self.calls = 0
        self._cuda = self.device is not None and self.device.type == "cuda"
        self._open: dict[int, tuple[Any, int, str]] = {}
        self._done: list[tuple[Any, Any, int, str]] = []  # (start, end, bytes, group)

    def _mark(self, device: torch.device) -> Any:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(device))  # the stream of the layer's own device
            return event
        return time.perf_counter()

    def on_decode_attention(self, session, layer_idx, query, key, attention_mask, scaling) -> None:
        report = session.report
        pruned = report is not None and layer_idx < len(report.layers) and report.layers[layer_idx].pruned
        read = 2 * key.numel() * key.element_size()  # keys and values, each read once at best
        self._open[layer_idx] = (self._mark(key.device), read, "pruned" if pruned else "other")

    def on_decode_attention_end(self, session, layer_idx, output) -> None:
        started = self._open.pop(layer_idx, None)
        if started is not None:
            start, read, group = started
            self._done.append((start, self._mark(output.device), read, group))
            self.calls += 1

    def totals(self) -> dict[str, dict[str, float]]:
        """Per group ("pruned", "other"): `seconds`, `bytes` (K and V of the cache) and `calls`."""
        out: dict[str, dict[str, float]] = {}
        for start, end, read, group in self._done:
            if self._cuda:
                end.synchronize()
            seconds = start.elapsed_time(end) / 1e3 if self._cuda else end - start
            entry = out.setdefault(group, {"seconds": 0.0, "bytes": 0, "calls": 0})
            entry["seconds"] += seconds
            entry["bytes"] += read
            entry["calls"] += 1
        return out
