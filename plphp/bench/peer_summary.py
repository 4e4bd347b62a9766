"""The summary of a plphp-against-kvpress session (`plphp.bench.peer`): per pair and side, medians and ratios.

Per side: KV bytes held after prefill (from the cache tensors), the entries per head they hold and
the entries decoding attends to (kvpress's AdaKV holds every entry and masks the pruned ones),
decode ms per step and tokens/s (median, min–max over the rounds, of each run's mean step), the
speedup against that side's own unpruned run, and the decode peak above the memory in use before
prefill (from each side's warm-up, run alone). Across sides: plphp's KV bytes over kvpress's, and
plphp's decode speed over kvpress's, paired within a round (`paired`: the median over the rounds of
kvpress's mean step over plphp's) and step by step (`per step`: the median of the per-step ratios).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

SIDES = ("plphp", "kvpress")
#: The issue's target for AdaKV: plphp's KV bytes at most this share of kvpress's, and faster decoding.
ADAKV_KV_RATIO_TARGET = 0.45


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarize(raw: dict[str, Any], workload: Any, model_config: dict[str, Any]) -> dict[str, Any]:
    """One row per pair from `run_peer_comparison`'s raw runs."""
    heads = model_config["num_attention_heads"]
    kv_heads = model_config.get("num_key_value_heads") or heads
    head_dim = model_config.get("head_dim") or model_config["hidden_size"] // heads
    layers = model_config["num_hidden_layers"]
    heads_total = layers * workload.batch * kv_heads  # (layer, sequence, KV head) rows
    entry_bytes = heads_total * head_dim * 2 * 4  # one position, keys and values, float32
    rows = []
    for pair in raw["pairs"]:
        label = pair["label"]
        runs = [r for r in raw["rounds"] if r["label"] == label]
        warm = next(w for w in raw["warmups"] if w["label"] == label)
        row: dict[str, Any] = {"label": label, "plphp_policy": pair["plphp_policy"], "kvpress_press": pair["kvpress"]}
        for side in SIDES:
            kv = [r[side]["kv_bytes"] for r in runs]
            steps = [_mean(r[side]["steps_s"]) for r in runs]
            attended = _attended(runs[0][side], side, workload, heads_total, entry_bytes)
            peak, before = warm[side].get("peak_decode"), warm[side].get("memory_before")
            row[side] = {
                "kv_bytes": statistics.median(kv),
                "kv_bytes_constant": len(set(kv)) == 1,
                "kv_bytes_allocated": statistics.median(r[side]["kv_bytes_allocated"] for r in runs),
                "entries_per_head_held": statistics.median(kv) / entry_bytes,
                "entries_per_head_attended": attended,
                "step_s": _spread(steps),
                "tokens_per_s": workload.batch / statistics.median(steps),
                "peak_decode_above_before": None if peak is None or before is None else peak - before,
            }
        row["kv_ratio"] = row["plphp"]["kv_bytes"] / row["kvpress"]["kv_bytes"]
        row["speed_ratio_paired"] = statistics.median(
            _mean(r["kvpress"]["steps_s"]) / _mean(r["plphp"]["steps_s"]) for r in runs
        )
        row["speed_ratio_per_step"] = statistics.median(
            theirs / mine for r in runs for mine, theirs in zip(r["plphp"]["steps_s"], r["kvpress"]["steps_s"])
        )
        rows.append(row)
    reference = next((row for row in rows if row["label"] == "unpruned"), None)
    for row in rows:
        for side in SIDES:
            base = reference[side] if reference else None
            row[side]["kv_vs_unpruned"] = row[side]["kv_bytes"] / base["kv_bytes"] if base else None
            row[side]["speedup_vs_unpruned"] = (
                base["step_s"]["median"] / row[side]["step_s"]["median"] if base else None
            )
    return {"rows": rows, "targets": _targets(rows)}


def _attended(run: dict[str, Any], side: str, workload: Any, heads_total: int, entry_bytes: int) -> float:
    """Entries per (layer, sequence, KV head) that decoding attends to."""
    if side == "kvpress":
        return run["kv_bytes"] / entry_bytes - run.get("masked_entries", 0) / heads_total
    fraction = run.get("vision_kept_fraction")
    if fraction is None:  # unpruned
        return float(workload.prompt_length)
    return workload.prompt_length - workload.vision_tokens + fraction * workload.vision_tokens


def _targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    adakv = next((row for row in rows if row["label"] == "adakv"), None)
    if adakv is None:
        return {}
    return {
        "adakv_kv_ratio": adakv["kv_ratio"],
        "adakv_kv_ratio_target": ADAKV_KV_RATIO_TARGET,
        "adakv_kv_ratio_met": adakv["kv_ratio"] <= ADAKV_KV_RATIO_TARGET,
        "adakv_speed_ratio_paired": adakv["speed_ratio_paired"],
        "adakv_faster_met": adakv["speed_ratio_paired"] > 1.0,
    }


# -- tables ---------------------------------------------------------------------------------------
def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:.1f}"


def _x(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}×"


def _ms(spread: dict[str, float]) -> str:
    return f"{spread['median'] * 1e3:.1f} ({spread['min'] * 1e3:.1f}–{spread['max'] * 1e3:.1f})"


MEMORY_HEADER = (
    "press",
    "plphp KV MiB",
    "kvpress KV MiB",
    "plphp / kvpress KV",
    "plphp KV × unpruned",
    "kvpress KV × unpruned",
    "entries/head held (plphp / kvpress)",
    "entries/head attended (plphp / kvpress)",
    "decode peak MiB (plphp / kvpress)",
)
SPEED_HEADER = (
    "press",
    "plphp ms/step",
    "kvpress ms/step",
    "plphp tok/s",
    "kvpress tok/s",
    "plphp speedup vs unpruned",
    "kvpress speedup vs unpruned",
    "plphp speed / kvpress (paired)",
    "per step",
)


def table_rows(summary: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """The memory table's and the speed table's rows (strings), in `MEMORY_HEADER` / `SPEED_HEADER` order."""
    memory, speed = [], []
    for row in summary["rows"]:
        mine, theirs = row["plphp"], row["kvpress"]
        memory.append(
            [
                row["label"],
                _mib(mine["kv_bytes"]),
                _mib(theirs["kv_bytes"]),
                _x(row["kv_ratio"]),
                _x(mine["kv_vs_unpruned"]),
                _x(theirs["kv_vs_unpruned"]),
                f"{mine['entries_per_head_held']:.0f} / {theirs['entries_per_head_held']:.0f}",
                f"{mine['entries_per_head_attended']:.0f} / {theirs['entries_per_head_attended']:.0f}",
                f"{_mib(mine['peak_decode_above_before'])} / {_mib(theirs['peak_decode_above_before'])}",
            ]
        )
        speed.append(
            [
                row["label"],
                _ms(mine["step_s"]),
                _ms(theirs["step_s"]),
                f"{mine['tokens_per_s']:.1f}",
                f"{theirs['tokens_per_s']:.1f}",
                _x(mine["speedup_vs_unpruned"]),
                _x(theirs["speedup_vs_unpruned"]),
                _x(row["speed_ratio_paired"]),
                _x(row["speed_ratio_per_step"]),
            ]
        )
    return memory, speed


def _markdown_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(result: dict[str, Any]) -> str:
    """The two tables, the setup they were measured with and the targets."""
    setup, summary = result["setup"], result["summary"]
    memory, speed = table_rows(summary)
    env, peer = setup["environment"], setup["peer"]
    lines = [
        f"plphp {env['plphp']} (transformers {env['transformers']}) against kvpress {peer['versions']['kvpress']} "
        f"(transformers {peer['versions']['transformers']}), torch {env['torch']}, "
        f"threads {env['torch_num_threads']} / {peer['torch_num_threads']} (plphp / kvpress), "
        f"load average {setup['load_avg_before']:.2f} before, per round {setup['load_avg_per_round']}.",
        f"Workload: {setup['workload']}; compression {setup['compression']} (kvpress) = vision retention "
        f"{setup['retention']:.4f} (plphp): both keep {setup['kept_per_head']} of {setup['prompt_length']} entries per head; "
        f"prefill {setup['prefill']}; {setup['rounds']} rounds, decode steps alternating between the processes.",
        "",
        _markdown_table(MEMORY_HEADER, memory),
        "",
        _markdown_table(SPEED_HEADER, speed),
    ]
    targets = summary["targets"]
    if targets:
        lines += [
            "",
            f"Target (AdaKV): plphp's KV ≤ {targets['adakv_kv_ratio_target']}× kvpress's: "
            f"{targets['adakv_kv_ratio']:.3f}× ({'met' if targets['adakv_kv_ratio_met'] else 'not met'}); "
            f"plphp decodes faster: {targets['adakv_speed_ratio_paired']:.3f}× "
            f"({'met' if targets['adakv_faster_met'] else 'not met'}).",
        ]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], json_path: str | None, markdown_path: str | None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    if markdown_path:
        Path(markdown_path).write_text(to_markdown(result))
