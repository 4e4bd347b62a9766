"""What the runs of `plphp bench` produced, and their summary: one row per variant, medians and ratios."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from plphp.bench.bandwidth import Bandwidth, floor_step_seconds, ideal_speedup, ideal_step_seconds
from plphp.bench.workload import FULL_FAST, UNPRUNED, Variant


@dataclass
class RunResult:
    """One run of one variant."""

    label: str
    round: int
    step_s: float  # mean seconds per decode step
    steps_s: list[float]
    tokens_per_s: float
    prefill_s: float | None
    ttft_s: float | None
    compress_s: float | None
    kv_bytes: int  # prompt KV bytes after prefill (and compression), real tensors
    kv_bytes_end: int  # KV bytes in use after the last step
    kv_bytes_allocated: int  # bytes of the buffers holding them
    memory_before: int | None
    peak_prefill: int | None
    peak_decode: int | None
    report: dict[str, Any] | None = None
    #: per layer group ("pruned", "other"): attention seconds, K/V bytes and calls in the decode steps
    attention: dict[str, dict[str, float]] | None = None


@dataclass
class BenchResult:
    setup: dict[str, Any]
    bandwidth: Bandwidth
    variants: list[Variant]
    runs: list[RunResult] = field(default_factory=list)
    warmups: list[RunResult] = field(default_factory=list)

    def runs_of(self, label: str) -> list[RunResult]:
        return [r for r in self.runs if r.label == label]

    def peak_runs_of(self, label: str) -> list[RunResult]:
        """The runs whose peak memory was measured alone: the timed runs, else the warm-up."""
        timed = [r for r in self.runs_of(label) if r.peak_decode is not None]
        return timed or [r for r in self.warmups if r.label == label]


def report_summary(report: Any) -> dict[str, Any]:
    """What the bench keeps of a `PruningReport`: its bytes, reduction and the formula check."""
    return {
        "policy": report.policy,
        "note": report.note,
        "kv_bytes_before": report.kv_bytes_before,
        "kv_bytes_after": report.kv_bytes_after,
        "vision_kv_reduction": report.vision_kv_reduction,
        "kv_reduction": report.kv_reduction,
        "vision_kept_fraction": report.vision_kept_fraction,
        "pruned_layers": sum(layer.pruned for layer in report.layers),
        "kv_bytes_formula": report.kv_bytes_formula(),
    }


def summarize(values: list[float]) -> dict[str, float] | None:
    """Median, min and max of the values that are not None (None when none is)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summary(result: BenchResult, weight_bytes: int) -> list[dict[str, Any]]:
    """One row per variant: medians (min–max), ratios against unpruned, and the bandwidth model."""
    reference = result.runs_of(UNPRUNED)
    ref_step = statistics.median(r.step_s for r in reference) if reference else None
    ref_kv = reference[0].kv_bytes if reference else None
    ref_peak = summarize([r.peak_decode for r in result.peak_runs_of(UNPRUNED)]) if reference else None
    bandwidth = result.bandwidth.read
    rows = []
    for variant in result.variants:
        runs = result.runs_of(variant.label)
        step = summarize([r.step_s for r in runs])
        row: dict[str, Any] = {
            "label": variant.label,
            "policy": variant.policy.describe() if variant.policy is not None else "none (transformers DynamicCache)",
            "retention": variant.retention,
            "runs": len(runs),
            "step_s": step,
            "tokens_per_s": summarize([r.tokens_per_s for r in runs]),
            "prefill_s": summarize([r.prefill_s for r in runs]),
            "ttft_s": summarize([r.ttft_s for r in runs]),
            "compress_s": summarize([r.compress_s for r in runs]),
            "kv_bytes": runs[0].kv_bytes,
            "kv_bytes_end": runs[0].kv_bytes_end,
            "kv_bytes_allocated": runs[0].kv_bytes_allocated,
            "peak_decode": summarize([r.peak_decode for r in result.peak_runs_of(variant.label)]),
            "peak_prefill": summarize([r.peak_prefill for r in result.peak_runs_of(variant.label)]),
            "report": runs[0].report,
            "floor_step_s": floor_step_seconds(weight_bytes, runs[0].kv_bytes, bandwidth),
        }
        if row["report"] is not None:
            row["kv_bytes_match_report"] = row["kv_bytes"] == row["report"]["kv_bytes_after"]
            row["kv_bytes_match_formula"] = row["kv_bytes"] == row["report"]["kv_bytes_formula"]
        if ref_step is not None:
            # Per decode step, the unpruned step of the same round and index over this one's.
            paired = [
                a / b
                for ref_run in reference
                for run in runs
                if ref_run.round == run.round
                for a, b in zip(ref_run.steps_s, run.steps_s)
            ]
            saved = ref_kv - runs[0].kv_bytes
            row["speedup"] = ref_step / step["median"]
            row["speedup_paired_median"] = statistics.median(paired)
            row["kv_saved_bytes"] = saved
            row["ideal_step_s"] = ideal_step_seconds(ref_step, saved, bandwidth)
            row["ideal_speedup"] = ideal_speedup(ref_step, saved, bandwidth)
            row["of_ideal"] = row["speedup"] / row["ideal_speedup"] if row["ideal_speedup"] > 0 else None
            if ref_peak is not None and row["peak_decode"] is not None:
                row["peak_decode_saved"] = ref_peak["median"] - row["peak_decode"]["median"]
        row.update(attention_summary(runs, bandwidth))
        prefill = row["prefill_s"]
        if row["compress_s"] is not None and prefill is not None:
            row["compress_share_of_prefill"] = row["compress_s"]["median"] / prefill["median"]
        rows.append(row)
    _against_full_fast(rows, bandwidth)
    return rows


def attention_summary(runs: list[RunResult], bandwidth: float) -> dict[str, Any]:
    """The attention calls of the decode steps: seconds per step, and per layer group ("pruned":
    the layers pruning shortened, "other") the K/V bytes read per second and its share of `bandwidth`."""
    timed = [run for run in runs if run.attention]
    if not timed:
        return {}
    out: dict[str, Any] = {
        "attention_s_per_step": summarize(
            [sum(group["seconds"] for group in run.attention.values()) / len(run.steps_s) for run in timed]
        )
    }
    out["attention_share_of_step"] = out["attention_s_per_step"]["median"] / statistics.median(
        run.step_s for run in timed
    )
    for group in ("pruned", "other"):
        rates = [
            run.attention[group]["bytes"] / run.attention[group]["seconds"] for run in timed if group in run.attention
        ]
        if rates:
            out[f"attention_read_Bps_{group}"] = summarize(rates)
            out[f"attention_bandwidth_share_{group}"] = statistics.median(rates) / bandwidth
    return out


def _against_full_fast(rows: list[dict[str, Any]], bandwidth: float) -> None:
    """Speedup over `full-fast` (every layer through the same grouped kernel, nothing pruned), and
    the bandwidth model's ideal computed against it: the gain of pruning at equal kernels."""
    base = next((row for row in rows if row["label"] == FULL_FAST and row["step_s"] is not None), None)
    if base is None:
        return
    base_step = base["step_s"]["median"]
    for row in rows:
        if row["label"] in (UNPRUNED, FULL_FAST) or row["step_s"] is None:
            continue
        saved = base["kv_bytes"] - row["kv_bytes"]
        row["speedup_vs_full_fast"] = base_step / row["step_s"]["median"]
        row["ideal_speedup_vs_full_fast"] = ideal_speedup(base_step, saved, bandwidth)
        row["of_ideal_vs_full_fast"] = row["speedup_vs_full_fast"] / row["ideal_speedup_vs_full_fast"]
