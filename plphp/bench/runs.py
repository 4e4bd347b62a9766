"""The measurement loop of `plphp bench`: variants interleaved A B A B … after a warm-up.

One *run* of a variant builds a fresh cache for the workload (a real prefill, or a synthetic one:
random keys and values, and statistics from the policy's own collector on a random observation
query), then decodes `new_tokens` greedy steps with the model's ordinary forward, timing each step.
The unpruned reference is the same loop with transformers' `DynamicCache` and no plphp session.
Decode cost depends only on the kept counts, not on the values, which is why a synthetic prefill
is an honest start for decode figures; the output says when it was used.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable
from typing import Any, Literal

import torch

from plphp.backends.cache import PrunableLayer
from plphp.backends.compat import cache_argument, output_cache
from plphp.bench.bandwidth import Bandwidth
from plphp.bench.memory import PeakMemory
from plphp.bench.summary import BenchResult, RunResult, report_summary
from plphp.bench.timing import AttentionTimer, CompressTimer, synchronize
from plphp.bench.workload import PrefillMode, Variant, Workload, build_input_ids
from plphp.errors import ConfigError

SYNTHETIC_NOTE = (
    "decode-only figures: the prefill is synthetic (random keys and values of the real shapes, statistics from "
    "the policy's collector on a random observation query), because decode cost depends only on the kept counts; "
    "prefill time and TTFT are not measured"
)


# -- one run --------------------------------------------------------------------------------------
def _kv_bytes(cache: Any) -> tuple[int, int]:
    """(bytes in use, bytes allocated) of the cache's key and value tensors."""
    used = allocated = 0
    for layer in cache.layers:
        if isinstance(layer, PrunableLayer):  # plphp's layer: its public byte counts
            if layer.nbytes:
                used += layer.nbytes
                allocated += layer.allocated_nbytes
            continue
        # transformers' DynamicLayer (the unpruned reference): the tensors and their storage
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None or keys.numel() == 0:
            continue
        used += keys.numel() * keys.element_size() + values.numel() * values.element_size()
        allocated += keys.untyped_storage().nbytes() + values.untyped_storage().nbytes()
    return used, allocated


def _synthetic_prefill(model: Any, session: Any, input_ids: torch.Tensor, seed: int) -> Any:
    """A cache of random keys / values of the model's shapes, compressed by `session` when given.

    It walks the session's own prefill path (`Session.begin_prefill` / `record_stats` /
    `end_prefill`): the prunable layers and vision positions are set up as the forward pre-hook
    does, the policy's collector scores each layer from a random observation query against the
    layer's keys, and the session allocates, selects and compresses as its forward hook does.
    """
    from transformers.cache_utils import DynamicCache

    config = model.config.get_text_config(decoder=True)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    batch, length = input_ids.shape
    device, dtype = model.device, model.dtype
    generator = torch.Generator(device=device).manual_seed(seed)
    cache = DynamicCache(config=model.config)
    if session is not None:
        session.begin_prefill(cache, input_ids, torch.ones_like(input_ids))
    scaling = head_dim**-0.5
    for idx in range(config.num_hidden_layers):
        shape = (batch, kv_heads, length, head_dim)
        keys = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        values = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        cache.layers[idx].update(keys, values)
        if session is not None:
            query = torch.randn((batch, heads, 1, head_dim), generator=generator, device=device, dtype=dtype)
            query = query.expand(batch, heads, length, head_dim)  # the collector reads only the last rows
            hidden = None
            if session.policy.collector.reads_hidden_states:  # DART: random layer outputs too
                hidden = torch.randn((batch, length, config.hidden_size), generator=generator, device=device)
            session.record_stats(idx, query, cache.layers[idx].keys, scaling, hidden_states=hidden)
        del keys, values
    if session is not None:
        session.end_prefill()
    return cache


class _Run:
    """One run of one variant: `prefill()`, then `step()` per decode step, then `finish()`.

    Several runs can be live at once (their caches side by side), so that decode steps of different
    variants can alternate step by step. Each step enters the variant's session around the forward
    call only (sessions cannot nest); the time is that of the forward call and the argmax.
    """

    def __init__(
        self,
        model: Any,
        variant: Variant,
        input_ids: torch.Tensor,
        new_tokens: int,
        prefill: PrefillMode,
        seed: int = 0,
    ):
        import plphp

        self.model = model
        self.cache_argument = cache_argument(model.forward)  # once: not inside the timed decode step
        self.variant = variant
        self.prefill_mode = prefill
        self.device = model.device
        self.input_ids = input_ids.to(self.device)
        self.new_tokens = new_tokens
        self.seed = seed
        self.timer = CompressTimer(self.device) if variant.policy is not None else None
        self.attention = AttentionTimer(self.device) if variant.policy is not None else None
        self.session = None
        if variant.policy is not None:
            observers = [self.timer, self.attention]
            self.session = plphp.apply(
                model, variant.policy, observers=observers, decode_attention=variant.decode_attention
            )
        self.steps: list[float] = []
        self.prefill_s: float | None = None
        self.ttft_s: float | None = None

    def _context(self):
        return self.session if self.session is not None else contextlib.nullcontext()

    def prefill(self) -> None:
        batch, length = self.input_ids.shape
        with torch.inference_mode(), self._context():
            synchronize(self.device)
            start = time.perf_counter()
            if self.prefill_mode == "real":
                out = self.model(
                    input_ids=self.input_ids,
                    attention_mask=torch.ones_like(self.input_ids),
                    use_cache=True,
                    logits_to_keep=1,
                )
                self.cache = output_cache(out)
                synchronize(self.device)
                self.prefill_s = time.perf_counter() - start
                self.token = out.logits[:, -1].argmax(-1, keepdim=True)
                synchronize(self.device)
                self.ttft_s = time.perf_counter() - start
                del out
            else:
                self.cache = _synthetic_prefill(self.model, self.session, self.input_ids, self.seed)
                self.token = torch.full((batch, 1), int(self.input_ids[0, -1]), dtype=torch.long, device=self.device)
        self.kv_bytes, _ = _kv_bytes(self.cache)
        self.report = self.session.report if self.session is not None else None
        self.mask = torch.ones(batch, length + self.new_tokens, dtype=torch.long, device=self.device)

    def step(self) -> None:
        length = self.input_ids.shape[1] + len(self.steps)
        with torch.inference_mode(), self._context():
            synchronize(self.device)
            start = time.perf_counter()
            out = self.model(
                input_ids=self.token,
                attention_mask=self.mask[:, : length + 1],
                **{self.cache_argument: self.cache},
                use_cache=True,
                logits_to_keep=1,
            )
            self.token = out.logits[:, -1].argmax(-1, keepdim=True)
            synchronize(self.device)
            self.steps.append(time.perf_counter() - start)
            del out

    def finish(self, round_index: int, memory_before=None, peak_prefill=None, peak_decode=None) -> RunResult:
        kv_end, kv_allocated = _kv_bytes(self.cache)
        self.cache = None
        decode_s = sum(self.steps)
        batch = self.input_ids.shape[0]
        return RunResult(
            label=self.variant.label,
            round=round_index,
            step_s=decode_s / len(self.steps),
            steps_s=self.steps,
            tokens_per_s=batch * len(self.steps) / decode_s,
            prefill_s=self.prefill_s,
            ttft_s=self.ttft_s,
            compress_s=self.timer.compress_s if self.timer is not None else None,
            kv_bytes=self.kv_bytes,
            kv_bytes_end=kv_end,
            kv_bytes_allocated=kv_allocated,
            memory_before=memory_before,
            peak_prefill=peak_prefill,
            peak_decode=peak_decode,
            report=report_summary(self.report) if self.report is not None else None,
            attention=self.attention.totals() if self.attention is not None else None,
        )


def run_once(
    model: Any,
    variant: Variant,
    input_ids: torch.Tensor,
    new_tokens: int,
    prefill: PrefillMode,
    memory: PeakMemory,
    round_index: int,
    seed: int = 0,
) -> RunResult:
    """Prefill (real or synthetic) and decode `new_tokens` steps for one variant, alone, with its
    peak memory: of the prefill, and of the decoding (reset after the prefill)."""
    memory_before = memory.reset()
    run = _Run(model, variant, input_ids, new_tokens, prefill, seed)
    run.prefill()
    peak_prefill = memory.peak()
    memory.reset()
    for _ in range(new_tokens):
        run.step()
    peak_decode = memory.peak()
    result = run.finish(round_index, memory_before, peak_prefill, peak_decode)
    del run
    gc.collect()
    return result


def run_steps_interleaved(
    model: Any,
    variants: list[Variant],
    input_ids: torch.Tensor,
    new_tokens: int,
    prefill: PrefillMode,
    round_index: int,
    seed: int = 0,
) -> list[RunResult]:
    """One round in which every variant's cache is live and decode steps alternate between variants
    (A B C, C B A, ... per step), so that each step of each variant sees the same machine load.
    Peak memory is not measured here (the caches are side by side); see `run_benchmark`."""
    order = variants if round_index % 2 == 0 else variants[::-1]
    runs = []
    for variant in order:
        run = _Run(model, variant, input_ids, new_tokens, prefill, seed)
        run.prefill()
        runs.append(run)
    for step in range(new_tokens):
        for run in runs if step % 2 == 0 else runs[::-1]:
            run.step()
    results = [run.finish(round_index) for run in runs]
    del runs
    gc.collect()
    return results


# -- the whole benchmark -------------------------------------------------------------------------
def run_benchmark(
    model: Any,
    variants: list[Variant],
    workload: Workload,
    *,
    prefill: PrefillMode,
    rounds: int,
    bandwidth: Bandwidth,
    setup: dict[str, Any],
    warmup_tokens: int = 4,
    interleave: Literal["steps", "runs"] = "steps",
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Warm each variant up once, then run `rounds` rounds, alternating the order (A B C, C B A, …)
    so that a drift of a shared machine's load does not favour one variant.

    With `interleave="steps"` (default) every round holds all variants' caches at once and alternates
    single decode steps between them; the peak memory of each variant then comes from its warm-up
    run, which runs alone (prefill, then `warmup_tokens` decode steps). With `interleave="runs"`
    each run is whole and alone, and measures its own peaks.
    """
    from plphp.registry import get_registry

    if rounds < 1:
        raise ConfigError(f"rounds: {rounds} is not allowed; it must be >= 1")
    if interleave not in ("steps", "runs"):
        raise ConfigError(f"interleave: {interleave!r} is not allowed; use 'steps' or 'runs'")
    if prefill == "synthetic":
        for variant in variants:
            if variant.policy is not None and variant.policy.stage != "decode":
                raise ConfigError(
                    f"--prefill synthetic: policy {variant.label!r} acts in stage {variant.policy.stage!r}, "
                    "so its prefill and cache come from the real prefill; use --prefill real for it"
                )
    adapter = get_registry().adapter_for(model)
    input_ids = build_input_ids(model, adapter, workload)
    memory = PeakMemory(model.device)
    result = BenchResult(setup={**setup, "memory_method": memory.method}, bandwidth=bandwidth, variants=variants)
    loads = []
    result.setup["interleave"] = interleave
    for variant in variants:
        if progress:
            progress(f"warm-up {variant.label}")
        warm = run_once(model, variant, input_ids, max(1, min(warmup_tokens, workload.new_tokens)), prefill, memory, -1)
        result.warmups.append(warm)
    for index in range(rounds):
        if interleave == "steps":
            if progress:
                progress(f"round {index + 1}/{rounds}: steps of all variants")
            result.runs.extend(run_steps_interleaved(model, variants, input_ids, workload.new_tokens, prefill, index))
        else:
            order = variants if index % 2 == 0 else variants[::-1]
            for variant in order:
                if progress:
                    progress(f"round {index + 1}/{rounds}: {variant.label}")
                result.runs.append(run_once(model, variant, input_ids, workload.new_tokens, prefill, memory, index))
        loads.append(os.getloadavg()[0])
    result.setup["load_avg_1min_per_round"] = loads
    return result
