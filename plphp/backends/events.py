"""The session's public instrumentation seam: events that observers subscribe to.

A tool that measures what a session does (the benchmark's timers, attention recall, a profiler)
subscribes an observer instead of replacing the session's methods or reading its buffers:

    class CompressTimer(SessionObserver):
        def on_compress_start(self, session):
            self.start = time.perf_counter()

        def on_compress_end(self, session, report):
            self.seconds = time.perf_counter() - self.start

    with plphp.apply(model, "plphp", observers=[CompressTimer()]) as session:
        model.generate(**inputs)

Events fire in this order for one `generate()` call: `on_prefill_start`, `on_prompt`, then per
decoder layer `on_collect_start` / `on_layer_stats`, `on_prefill_end`, `on_compress_start`,
`on_layer_compressed` per pruned layer, `on_compress_end`; then per decoding step `on_decode_step`
and, per decoder layer, `on_decode_attention` before its attention runs and `on_decode_attention_end`
after (a timer between the two times the attention call alone). A prompt without vision tokens has `on_prompt(None)`
and no compression events. See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import torch

from plphp.report import PruningReport
from plphp.stats import LayerStats, PromptInfo

#: The event names, in the order they fire.
EVENTS = (
    "on_prefill_start",
    "on_prompt",
    "on_collect_start",
    "on_layer_stats",
    "on_prefill_end",
    "on_compress_start",
    "on_layer_compressed",
    "on_compress_end",
    "on_decode_step",
    "on_decode_attention",
    "on_decode_attention_end",
)


class SessionObserver:
    """Base class of session observers: override the events you need; all are no-ops here.

    Every method receives the `Session` first. Observers must not change the tensors they are
    given; they run inside the model's forward pass.
    """

    def on_prefill_start(self, session: Any) -> None:
        """A prefill begins (before its setup: cache layers, vision mask, image segments)."""

    def on_prompt(self, session: Any, prompt: PromptInfo | None) -> None:
        """The prefill is set up: its `PromptInfo`, or None when the prompt holds no vision tokens."""

    def on_collect_start(self, session: Any, layer_idx: int) -> None:
        """The collector is about to score layer `layer_idx`."""

    def on_layer_stats(self, session: Any, layer_idx: int, stats: LayerStats) -> None:
        """The collector's statistics of layer `layer_idx`, just after it ran."""

    def on_prefill_end(self, session: Any) -> None:
        """The prefill forward returned; compression has not started."""

    def on_compress_start(self, session: Any) -> None:
        """Allocation, selection and compression begin (or, in the prefill stage, the report)."""

    def on_layer_compressed(self, session: Any, layer_idx: int, layer: Any) -> None:
        """A layer's cache after pruning: a `PrunableLayer` (`length`, `nbytes`, `allocated_nbytes`)."""

    def on_compress_end(self, session: Any, report: PruningReport) -> None:
        """The report of this prefill."""

    def on_decode_step(self, session: Any, batch_size: int) -> None:
        """A forward call after the prefill: one decoding step of `batch_size` rows."""

    def on_decode_attention(
        self,
        session: Any,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
    ) -> None:
        """A decoder layer's attention in a decoding step, before it runs.

        Args:
            query: `[B, H, q, D]` post-RoPE queries.
            key: `[B, H_kv, kv, D]` the layer's whole cache (pruned or not).
            attention_mask: the mask the layer attends with (bool or additive), None when every key is
                visible.
            scaling: the softmax scale.
        """

    def on_decode_attention_end(self, session: Any, layer_idx: int, output: torch.Tensor) -> None:
        """A decoder layer's attention in a decoding step has returned `output` `[B, q, H, D]`."""


class Observers:
    """The observers of one session, and the dispatch of each event to those that define it."""

    def __init__(self, observers: Any = ()):
        self._observers: list[Any] = []
        for observer in observers:
            self.add(observer)

    def add(self, observer: Any) -> None:
        if not any(callable(getattr(observer, name, None)) for name in EVENTS):
            raise TypeError(
                f"{type(observer).__name__} has none of the session events ({', '.join(EVENTS)}); "
                "subclass plphp.backends.events.SessionObserver"
            )
        if observer not in self._observers:
            self._observers.append(observer)

    def __len__(self) -> int:
        return len(self._observers)

    def remove(self, observer: Any) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def emit(self, event: str, session: Any, *args: Any) -> None:
        """Call `event` on every observer that has it (a `SessionObserver`'s own are no-ops)."""
        for observer in self._observers:
            handler = getattr(observer, event, None)
            if handler is not None:
                handler(session, *args)
