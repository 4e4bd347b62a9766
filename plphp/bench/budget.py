"""Throughput at a fixed memory budget (`plphp bench --memory-budget`): what pruning buys.

For each variant the search finds the largest batch whose decode peak fits the budget (peak RSS of
the process on CPU, `max_memory_allocated` on CUDA, as `PeakMemory` measures: weights, cache,
buffers, spare slots and activations all counted, nothing assumed), from short probe runs: batch 1
and 2 seed a linear estimate of the peak per sequence, the estimate is probed, and the boundary is
found by galloping and bisection. Then each variant decodes at its own batch, whole runs
alternating between variants (A B C, C B A, …), and its tokens/s is compared with the unpruned
reference's at that one's largest batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from plphp.bench.memory import PeakMemory
from plphp.bench.runs import run_once
from plphp.bench.summary import RunResult, summarize
from plphp.bench.workload import UNPRUNED, PrefillMode, Variant, Workload, build_input_ids
from plphp.errors import ConfigError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """Bytes of a size such as `8GiB`, `512MiB`, `4GB` or `1000000` (binary and decimal units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", str(text), flags=re.I)
    if match is None:
        raise ConfigError(f"--memory-budget: {text!r} is not a size; use e.g. 8GiB, 512MiB, 4GB or a byte count")
    value = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if value < 1:
        raise ConfigError(f"--memory-budget: {text!r} must be at least 1 byte")
    return int(value)


@dataclass
class Probe:
    """One short run at one batch: its decode peak and whether it fit."""

    batch: int
    peak_decode: int
    peak_prefill: int
    fits: bool


@dataclass
class BudgetResult:
    """One variant under the budget: the probes of the search, its largest batch, its timed runs."""

    variant: Variant
    max_batch: int = 0
    probes: list[Probe] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)


@dataclass
class BatchSearch:
    """The largest batch of one variant whose decode peak fits `budget` (bytes), from probe runs."""

    model: Any
    adapter: Any
    variant: Variant
    workload: Workload
    budget: int
    memory: PeakMemory
    prefill: PrefillMode = "synthetic"
    probe_tokens: int = 2
    limit: int = 4096
    probes: dict[int, Probe] = field(default_factory=dict)

    def probe(self, batch: int) -> Probe:
        if batch not in self.probes:
            input_ids = build_input_ids(self.model, self.adapter, replace(self.workload, batch=batch))
            run = run_once(self.model, self.variant, input_ids, self.probe_tokens, self.prefill, self.memory, -1)
            if run.peak_decode is None:
                raise ConfigError("--memory-budget: this device reports no peak memory, so no batch can be sized")
            fits = run.peak_decode <= self.budget
            self.probes[batch] = Probe(batch, run.peak_decode, run.peak_prefill or 0, fits)
        return self.probes[batch]

    def largest(self) -> int:
        """0 when even one sequence does not fit."""
        if not self.probe(1).fits:
            return 0
        if self.limit == 1 or not self.probe(2).fits:
            return 1
        low, high = 2, None  # low fits; high (when known) does not
        per_sequence = self.probes[2].peak_decode - self.probes[1].peak_decode
        if per_sequence > 0:  # a linear estimate: exact when the peak is linear, then one probe confirms it
            fixed = self.probes[1].peak_decode - per_sequence
            guess = min(self.limit, max(3, int((self.budget - fixed) // per_sequence)))
            if self.probe(guess).fits:
                if guess == self.limit or not self.probe(guess + 1).fits:
                    return guess
                low = guess + 1
            else:
                if self.probe(guess - 1).fits:
                    return guess - 1
                high = guess - 1
        step = max(1, low // 16)
        while high is None:  # gallop up from the last batch that fit
            candidate = min(self.limit, low + step)
            if candidate == low:
                return low
            if self.probe(candidate).fits:
                low, step = candidate, step * 2
            else:
                high = candidate
        while high - low > 1:
            middle = (low + high) // 2
            if self.probe(middle).fits:
                low = middle
            else:
                high = middle
        return low


def run_budget(
    model: Any,
    adapter: Any,
    variants: list[Variant],
    workload: Workload,
    budget: int,
    *,
    rounds: int,
    prefill: PrefillMode = "synthetic",
    probe_tokens: int = 2,
    limit: int = 4096,
    progress: Callable[[str], None] | None = None,
) -> list[BudgetResult]:
    """Size every variant's batch to `budget`, then time `rounds` alternating rounds at those batches."""
    if rounds < 1:
        raise ConfigError(f"rounds: {rounds} is not allowed; it must be >= 1")
    memory = PeakMemory(model.device)
    results = []
    for variant in variants:
        if progress:
            progress(f"sizing {variant.label} to the budget")
        search = BatchSearch(
            model, adapter, variant, workload, budget, memory, prefill=prefill, probe_tokens=probe_tokens, limit=limit
        )
        result = BudgetResult(variant, search.largest())
        result.probes = sorted(search.probes.values(), key=lambda probe: probe.batch)
        results.append(result)
    for index in range(rounds):
        for result in results if index % 2 == 0 else results[::-1]:
            if not result.max_batch:
                continue
            if progress:
                progress(f"round {index + 1}/{rounds}: {result.variant.label} at batch {result.max_batch}")
            input_ids = build_input_ids(model, adapter, replace(workload, batch=result.max_batch))
            run = run_once(model, result.variant, input_ids, workload.new_tokens, prefill, memory, index)
            result.runs.append(run)
    return results


def budget_rows(results: list[BudgetResult], budget: int) -> list[dict[str, Any]]:
    """One row per variant: largest batch, tokens/s, ratios against unpruned, KV bytes per sequence."""
    rows = []
    for result in results:
        runs = result.runs
        report = runs[0].report if runs else None
        row: dict[str, Any] = {
            "label": result.variant.label,
            "policy": result.variant.policy.describe() if result.variant.policy is not None else "none (DynamicCache)",
            "max_batch": result.max_batch,
            "tokens_per_s": summarize([run.tokens_per_s for run in runs]),
            "step_s": summarize([run.step_s for run in runs]),
            "kv_bytes_per_sequence": runs[0].kv_bytes / result.max_batch if runs else None,
            "kv_bytes_allocated_per_sequence": runs[0].kv_bytes_allocated / result.max_batch if runs else None,
            "peak_decode": summarize([run.peak_decode for run in runs]),
            "peak_prefill": summarize([run.peak_prefill for run in runs]),
            # The timed runs decode more steps than the probes: say whether they stayed within the budget.
            "fits_budget": bool(runs)
            and all(run.peak_decode is not None and run.peak_decode <= budget for run in runs),
            "vision_kept_fraction": report["vision_kept_fraction"] if report else 1.0,
            "probes": [probe.__dict__ for probe in result.probes],
        }
        rows.append(row)
    reference = next((row for row in rows if row["label"] == UNPRUNED), None)
    for row in rows:
        if reference is None or not reference["max_batch"] or row["tokens_per_s"] is None:
            row["batch_ratio"] = row["throughput_ratio"] = None
            continue
        row["batch_ratio"] = row["max_batch"] / reference["max_batch"]
        row["throughput_ratio"] = row["tokens_per_s"]["median"] / reference["tokens_per_s"]["median"]
    return rows


def _median(summary: dict[str, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if summary is None else f"{summary['median'] * scale:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


COLUMNS = (
    "policy",
    "max batch",
    "× batch",
    "tokens/s",
    "× tokens/s",
    "KV MiB/seq",
    "peak MiB",
    "in budget",
    "vision kept",
)


def _cells(row: dict[str, Any]) -> list[str]:
    per_sequence = row["kv_bytes_per_sequence"]
    return [
        row["label"],
        str(row["max_batch"]),
        _ratio(row["batch_ratio"]),
        _median(row["tokens_per_s"]),
        _ratio(row["throughput_ratio"]),
        "—" if per_sequence is None else f"{per_sequence / 2**20:.1f}",
        _median(row["peak_decode"], 2**-20, 0),
        ("yes" if row["fits_budget"] else "no") if row["tokens_per_s"] is not None else "—",
        f"{row['vision_kept_fraction']:.1%}",
    ]


def rich_table(rows: list[dict[str, Any]], title: str) -> Any:
    from plphp.tables import FitTable

    table = FitTable(title=title, caption="× batch, × tokens/s: against unpruned at its own largest batch")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for row in rows:
        table.add_row(*_cells(row))
    return table


def markdown(rows: list[dict[str, Any]], notes: list[str]) -> str:
    lines = [f"- {note}" for note in notes] + ["", "| " + " | ".join(COLUMNS) + " |"]
    lines.append("| " + " | ".join("---" for _ in COLUMNS) + " |")
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Any, title: str) -> None:
    """Tokens/s at the budget (and the largest batch) against the vision KV kept."""
    from matplotlib.figure import Figure

    points = sorted((row for row in rows if row["tokens_per_s"] is not None), key=lambda r: r["vision_kept_fraction"])
    figure = Figure(figsize=(10, 4.2))
    rate, batch = figure.subplots(1, 2)
    for index, row in enumerate(points):
        x = row["vision_kept_fraction"]
        rate.plot([x], [row["tokens_per_s"]["median"]], "o", color=f"C{index}", label=row["label"])
        batch.plot([x], [row["max_batch"]], "s", color=f"C{index}")
    rate.set(xlabel="vision KV kept", ylabel="decode tokens/s at the budget", xlim=(0, 1.05))
    batch.set(xlabel="vision KV kept", ylabel="largest batch within the budget", xlim=(0, 1.05))
    for axis in (rate, batch):
        axis.grid(alpha=0.3)
    rate.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def budget_command(
    console: Any,
    o: dict[str, Any],
    model: Any,
    shape: Any,
    how: str,
    variants: list[Variant],
    workload: Workload,
    budget: int,
    command: str,
) -> None:
    """`plphp bench --memory-budget`: size each variant's batch to the budget, time it there, print and write."""
    import os

    from plphp.bench.environment import describe_kernel, environment
    from plphp.bench.output import write_json
    from plphp.registry import get_registry

    adapter = get_registry().adapter_for(model)
    with console.status("sizing batches to the budget") as status:
        results = run_budget(
            model,
            adapter,
            variants,
            workload,
            budget,
            rounds=o["rounds"],
            prefill=o["prefill"],
            probe_tokens=o["probe_tokens"],
            limit=o["max_batch"],
            progress=status.update,
        )
    rows = budget_rows(results, budget)
    env = environment()
    notes = [
        f"model: {how}",
        f"budget: {o['memory_budget']} = {budget:,} bytes of decode peak ({PeakMemory(model.device).method}), weights "
        "and every per-sequence buffer included; probes of "
        f"{o['probe_tokens']} decode steps size each variant's batch (up to {o['max_batch']}), then {o['rounds']} "
        f"rounds of {workload.new_tokens} steps alternate between variants; 'in budget': whether those longer "
        "runs' peaks stayed within it",
        f"threads: torch {env['torch_num_threads']}; 1-min load {os.getloadavg()[0]:.2f}; {describe_kernel(env)}",
    ]
    title = (
        f"plphp bench --memory-budget {o['memory_budget']}: {shape.name}, {o['dtype']}, {workload.vision_tokens} "
        f"vision + {workload.text_tokens} text tokens, {workload.new_tokens} new tokens, {o['prefill']} prefill"
    )
    console.print(rich_table(rows, title))
    for note in notes:
        console.print(f"- {note}")
    payload = {
        "setup": {"command": command, "environment": env, "budget": budget},
        "notes": notes,
        "rows": rows,
        "runs": [run.__dict__ for r in results for run in r.runs],
    }
    if o["json_out"] is not None:
        write_json(o["json_out"], payload)
        console.print(f"wrote {o['json_out']}")
    if o["markdown_out"] is not None:
        o["markdown_out"].write_text(markdown(rows, [title, *notes]))
        console.print(f"wrote {o['markdown_out']}")
    if o["plot_out"] is not None:
        plot(rows, o["plot_out"], title)
        console.print(f"wrote {o['plot_out']}")
