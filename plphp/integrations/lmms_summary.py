"""The plphp summary of an lmms-eval run: per request, what pruning removed and what decoding cost; per
task, the means. Rank 0 gathers every rank's requests and writes it beside lmms-eval's results.

One record per request (`request_record`), from the session's `PruningReport` (the same
`kv_bytes_per_sample` figures as `plphp eval`'s records):

- `kv_bytes_before`, `kv_bytes_after`: the request's own prompt KV bytes (no padding) before and
  after pruning;
- `vision_kv_removed`: the share of its vision KV entries removed (mean over layers);
- `decode_ms_per_token`: its batch's decode time per generated token (None for likelihoods).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SUMMARY_SUFFIX = "_plphp.json"


def request_record(
    task: str,
    doc_id: Any,
    request_type: str,
    kv_bytes_before: int,
    kv_bytes_after: int,
    vision_kv_kept: float,
    decode_seconds_per_token: float | None,
    new_tokens: int | None,
) -> dict[str, Any]:
    """One request's figures, JSON-ready."""
    return {
        "task": task,
        "doc_id": doc_id,
        "request_type": request_type,
        "kv_bytes_before": int(kv_bytes_before),
        "kv_bytes_after": int(kv_bytes_after),
        "vision_kv_removed": 1.0 - float(vision_kv_kept),
        "decode_ms_per_token": None if decode_seconds_per_token is None else decode_seconds_per_token * 1000,
        "new_tokens": new_tokens,
    }


def _order(record: Mapping[str, Any]) -> tuple[Any, ...]:
    doc = record["doc_id"]
    doc_key = (0, doc, "") if isinstance(doc, int) else (1, 0, str(doc))
    return (record["task"], record["request_type"], doc_key)


def sort_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records in (task, request type, doc id) order, whichever rank produced them (stable for repeats)."""
    return sorted((dict(r) for r in records), key=_order)


def _figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    before = sum(r["kv_bytes_before"] for r in rows)
    after = sum(r["kv_bytes_after"] for r in rows)
    times = [r["decode_ms_per_token"] for r in rows if r["decode_ms_per_token"] is not None]
    return {
        "requests": len(rows),
        "kv_bytes_before": before / len(rows),
        "kv_bytes_after": after / len(rows),
        "kv_saved": 1.0 - after / before if before else 0.0,
        "vision_kv_removed": sum(r["vision_kv_removed"] for r in rows) / len(rows),
        "decode_ms_per_token": statistics.median(times) if times else None,
    }


def summarize_requests(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task, and over all tasks (`"all"`): requests, mean KV bytes per request before and after,
    `kv_saved` (1 - after / before, over the task's bytes), mean `vision_kv_removed`, and the median
    decode time per token over the requests that decoded."""
    by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        by_task[record["task"]].append(record)
    out = {task: _figures(rows) for task, rows in sorted(by_task.items())}
    if records:
        out["all"] = _figures(records)
    return out


def summary_document(records: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> dict[str, Any]:
    """The summary file's content: the run (model, policy, processes), per-task figures, every request."""
    ordered = sort_records(records)
    return {**run, "tasks": summarize_requests(ordered), "requests": ordered}


def gather_records(records: Sequence[Mapping[str, Any]], world_size: int) -> list[dict[str, Any]]:
    """Every rank's records (on every rank), in one order; the records themselves with one process."""
    if world_size == 1:
        return sort_records(records)
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, list(records))
    return sort_records([record for part in gathered for record in part])


def option_value(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name X` or `--name=X` on a command line (the last one given), or None."""
    value = None
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def summary_path(summary: str | None, results_dir: Path | None, stamp: str) -> Path | None:
    """Where the summary goes: `summary` (a `.json` file, or a folder), else `results_dir` (the folder of
    lmms-eval's `<date>_results.json`), as `<stamp>_plphp.json`; None when neither is known."""
    if summary is not None:
        path = Path(summary).expanduser()
        return path if path.suffix == ".json" else path / f"{stamp}{SUMMARY_SUFFIX}"
    return None if results_dir is None else results_dir / f"{stamp}{SUMMARY_SUFFIX}"


def write_summary(path: Path, document: Mapping[str, Any]) -> Path:
    """Write the summary as JSON (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    return path


def summary_table(tasks: Mapping[str, Mapping[str, Any]], title: str) -> Any:
    """A rich table, one row per task: requests, KV per request before and after, KV saved, vision KV
    removed, decode time per token."""
    from plphp.tables import FitTable

    table = FitTable(title=title)
    for index, column in enumerate(
        ("task", "requests", "KV before", "KV after", "KV saved", "vision removed", "ms/token")
    ):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for task, row in tasks.items():
        ms = row["decode_ms_per_token"]
        table.add_row(
            task,
            str(row["requests"]),
            f"{row['kv_bytes_before'] / 1024:,.0f}K",
            f"{row['kv_bytes_after'] / 1024:,.0f}K",
            f"{row['kv_saved']:.1%}",
            f"{row['vision_kv_removed']:.1%}",
            "—" if ms is None else f"{ms:.2f}",
        )
    return table
