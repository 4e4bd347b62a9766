"""Whole-prefill timings of the prefill benchmarks (`benchmarks/prefill_overhead.py`, `prefill_speedup.py`).

One prefill is `model(input_ids, use_cache=True)`, plain or inside `with plphp.apply(model, policy):`.
Variants run interleaved after one warm-up of each, so that a drift of a shared machine's load
touches them alike; the figures are ratios of medians and medians of per-round ratios.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from plphp.bench.summary import summarize
from plphp.bench.timing import PrefillTimer

#: The parts of a plphp prefill timed directly (`timed_prefill(..., parts=True)`), with their labels.
PARTS = (
    ("apply_s", "plphp.apply() (policy + adapter)"),
    ("enter_exit_s", "session enter + exit"),
    ("setup_s", "pre-hook prefill setup"),
    ("collect_s", "collector calls"),
    ("compress_s", "compression (allocate+select+gather)"),
    ("accounted_s", "sum (direct estimate of the overhead)"),
)


def _forward(model: Any, inputs: torch.Tensor | Mapping[str, Any]) -> Any:
    """`model(input_ids, use_cache=True)`, or `model(**inputs, use_cache=True)` for a dict of model inputs."""
    if isinstance(inputs, Mapping):
        return model(**inputs, use_cache=True)
    return model(inputs, use_cache=True)


def timed_prefill(
    model: Any, input_ids: torch.Tensor | Mapping[str, Any], policy: Any = None, parts: bool = False
) -> dict[str, Any]:
    """One prefill, plain (`policy` None) or under `policy`; `input_ids` may be a dict of model inputs
    (with `pixel_values`, for the input stage's tower statistics).

    Returns:
        `seconds` / `cpu_seconds`: wall and process-CPU time of everything (for a policy: `plphp.apply`,
        entering the session, the forward and leaving it); `forward_s` / `forward_cpu_s`: the forward
        call alone; `last_logits`; for a policy `vision_kv_reduction`, `kv_reduction`, `pruned_layers`,
        `apply_s` and `enter_exit_s`, and with `parts` the session's own parts from its events
        (`setup_s`, `collect_s`, `collect_calls`, `compress_s`) and their sum with apply and
        enter / exit (`accounted_s`).
    """
    import plphp

    gc.collect()
    result: dict[str, Any] = {}
    with torch.inference_mode():
        c0, t0 = time.process_time(), time.perf_counter()
        if policy is None:
            out = _forward(model, input_ids)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            result.update(seconds=wall, cpu_seconds=cpu, forward_s=wall, forward_cpu_s=cpu)
        else:
            timer = PrefillTimer() if parts else None
            session = plphp.apply(model, policy, observers=[timer] if timer is not None else ())
            t1 = time.perf_counter()
            with session:  # registers the attention function, sets it, adds the hooks
                c2, t2 = time.process_time(), time.perf_counter()
                out = _forward(model, input_ids)
                t3, c3 = time.perf_counter(), time.process_time()
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            report = session.report
            result.update(
                seconds=total,
                cpu_seconds=cpu,
                forward_s=t3 - t2,
                forward_cpu_s=c3 - c2,
                apply_s=t1 - t0,
                enter_exit_s=(t2 - t1) + (t0 + total - t3),
                vision_kv_reduction=report.vision_kv_reduction if report is not None else None,
                kv_reduction=report.kv_reduction if report is not None else None,
                pruned_layers=sum(layer.pruned for layer in report.layers) if report is not None else 0,
            )
            if timer is not None:
                result.update(
                    setup_s=timer.setup_s,
                    collect_s=timer.collect_s,
                    collect_calls=timer.collect_calls,
                    compress_s=timer.compress_s,
                )
                result["accounted_s"] = sum(result[key] for key, _ in PARTS[:-1])
        result["last_logits"] = out.logits[0, -1].clone()
    del out
    return result


def warm_up(model: Any, input_ids: torch.Tensor, variants: Mapping[str, Any], parts: bool = False) -> dict[str, Any]:
    """One untimed-for-the-figures prefill of each variant (label -> policy or None), in order: their results."""
    return {label: timed_prefill(model, input_ids, policy, parts) for label, policy in variants.items()}


def interleaved_prefills(
    model: Any,
    input_ids: torch.Tensor,
    variants: Mapping[str, Any],
    rounds: int,
    *,
    alternate: bool = True,
    parts: bool = False,
    on_round: Callable[[int, dict[str, dict[str, Any]], float], None] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], list[float]]:
    """`rounds` rounds of one prefill of each variant (label -> policy or None), the order reversed every
    other round when `alternate` (A B C, C B A, …); run `warm_up` first.

    Returns:
        The results per label (without `last_logits`) and the 1-minute load average after each round;
        `on_round(index, results of the round, load)` is called after each round.
    """
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    loads = []
    order = list(variants.items())
    for index in range(rounds):
        this_round = {}
        for label, policy in order if not alternate or index % 2 == 0 else order[::-1]:
            result = timed_prefill(model, input_ids, policy, parts)
            result.pop("last_logits")
            runs[label].append(result)
            this_round[label] = result
        loads.append(os.getloadavg()[0])
        if on_round is not None:
            on_round(index, this_round, loads[-1])
    return runs, loads


def paired_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Round by round, one variant's time over another's."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def overhead(times: list[float], cpu_times: list[float], base: list[float], cpu_base: list[float]) -> dict[str, Any]:
    """A variant's prefill time against the plain one: ratios of medians, per-round ratios, overhead %."""
    ratio = statistics.median(times) / statistics.median(base)
    paired = paired_ratios(times, base)
    cpu_ratio = statistics.median(cpu_times) / statistics.median(cpu_base)
    return {
        "ratio_of_medians": ratio,
        "overhead_pct": (ratio - 1) * 100,
        "paired_ratios": paired,
        "median_paired_ratio": statistics.median(paired),
        "paired_overhead_pct": (statistics.median(paired) - 1) * 100,
        "cpu_ratio_of_medians": cpu_ratio,
        "cpu_overhead_pct": (cpu_ratio - 1) * 100,
    }


def speedup(times: list[float], cpu_times: list[float], base: list[float], cpu_base: list[float]) -> dict[str, Any]:
    """The plain prefill time over a variant's: of the medians, the median per-round ratio, and of CPU time."""
    return {
        "seconds": times,
        "cpu_seconds": cpu_times,
        "median_s": statistics.median(times),
        "speedup": statistics.median(base) / statistics.median(times),
        "paired_speedup": statistics.median(paired_ratios(base, times)),
        "cpu_speedup": statistics.median(cpu_base) / statistics.median(cpu_times),
    }


def overhead_figures(runs: Mapping[str, list[dict[str, Any]]], base: str = "plain") -> dict[str, Any]:
    """The figures of `benchmarks/prefill_overhead.py` from `interleaved_prefills(..., parts=True)` runs:
    seconds and CPU seconds per variant, their summaries, each other variant's `overhead` against
    `base`, and the median of each of its timed `PARTS` (keys "<variant>.<part>")."""
    times = {name: [r["seconds"] for r in rs] for name, rs in runs.items()}
    cpu_times = {name: [r["cpu_seconds"] for r in rs] for name, rs in runs.items()}
    others = [name for name in runs if name != base]
    return {
        "seconds": times,
        "cpu_seconds": cpu_times,
        "summary": {name: summarize(t) for name, t in times.items()},
        "cpu_summary": {name: summarize(t) for name, t in cpu_times.items()},
        "comparisons": {name: overhead(times[name], cpu_times[name], times[base], cpu_times[base]) for name in others},
        "parts": {
            f"{name}.{key}": statistics.median(r[key] for r in runs[name]) for key, _ in PARTS for name in others
        },
    }
