"""`evaluate`: run, summarize, and write `results.json`, `eval.png`; `default_policies`. Under `torchrun` or
`accelerate launch` every process runs its share and rank 0 writes the results (`parallel.py`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from plphp.errors import PlphpError
from plphp.evaluation.dataset import EvalItem
from plphp.evaluation.parallel import RANK_RECORDS, RECORDS, Shard, merge_records, read_all_records
from plphp.evaluation.plot import plot_summary
from plphp.evaluation.runner import SETTINGS, EvalSettings, check_settings, run_eval
from plphp.evaluation.stats import LEVEL, RESAMPLES, SEED
from plphp.evaluation.summary import summarize, summary_table
from plphp.policy import Policy, load_policy
from plphp.registry import get_registry

RESULTS = "results.json"
PLOT = "eval.png"


def default_policies() -> list[str]:
    """`full`, `plphp`, `random`, and `fastv` when a preset of that name is registered."""
    names = ["full", "plphp", "random"]
    if "fastv" in get_registry().presets():
        names.append("fastv")
    return names


def evaluate(
    model: Any,
    processor: Any,
    items: Sequence[EvalItem],
    policies: Sequence[str] | Mapping[str, Policy | str | dict] | None = None,
    out_dir: str | os.PathLike = "eval-out",
    settings: EvalSettings | None = None,
    run_info: Mapping[str, Any] | None = None,
    console: Any = None,
    overwrite: bool = False,
    shard: Shard | None = None,
) -> dict[str, Any] | None:
    """Evaluate policies on items; write `items.jsonl`, `results.json` and `eval.png` into `out_dir`.

    Args:
        model: a supported vision-language model.
        processor: its processor.
        items: the dataset (`builtin_items` or `load_jsonl`).
        policies: preset names / policy files, or name -> policy; `default_policies()` when None.
        out_dir: output folder; finished items already there are skipped (resume).
        settings: batch size, token budget, recall.
        run_info: what identifies the run (model, dataset); a folder written with other values is refused.
        console: a rich console for the progress bar and the table (None: silent).
        overwrite: discard earlier results in `out_dir`.
        shard: this process among several; by default read from the environment that `torchrun`
            and `accelerate launch` set (`Shard.from_environment`). Every process calls `evaluate`
            with the same arguments; rank 0 merges the records and writes the results.

    Returns:
        The content of `results.json`: `{"settings": ..., "policies": {name: figures}}` (None on
        the processes other than rank 0).
    """
    settings = settings or EvalSettings()
    if policies is None:
        policies = default_policies()
    if not isinstance(policies, Mapping):
        policies = _named(policies)
    resolved = {name: load_policy(spec) for name, spec in policies.items()}
    out = Path(out_dir)
    shard = shard or Shard.from_environment()
    if not shard.is_main:
        console = None  # one progress bar and one table: rank 0's
    if overwrite and shard.is_main:
        for path in (
            *(out / name for name in (RECORDS, RESULTS, PLOT, SETTINGS)),
            *out.glob(RANK_RECORDS.format(rank="*")),
        ):
            path.unlink(missing_ok=True)
    info = {**(run_info or {}), "max_new_tokens": settings.max_new_tokens}
    if shard.is_main:
        check_settings(out, info)
    shard.barrier()  # rank 0 has cleared and recorded the folder
    if not shard.is_main:
        check_settings(out, info, write=False)
    if console is not None:
        done, total = _results_done(out, items, resolved)
        if done:
            console.print(
                f"resuming: {done} of {total} done ({len(resolved)} policies × {len(items)} items, "
                f"from {out / RECORDS})"
            )
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("[bold]eval[/bold]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
        ) as progress:
            task = progress.add_task("items", total=len(items))
            done_before = _finished(out, items, resolved)
            progress.update(task, completed=done_before)
            records = run_eval(
                model, processor, items, resolved, out, settings, lambda n: progress.advance(task, n), shard
            )
    else:
        records = run_eval(model, processor, items, resolved, out, settings, shard=shard)
    if shard.world_size > 1:
        shard.barrier()  # every rank has written its records
        if not shard.is_main:
            return None
        merge_records(out)
        wanted = {item.id for item in items}
        records = [r for r in read_all_records(out) if r["id"] in wanted and r["policy"] in resolved]
    summary = summarize(records, list(resolved))
    results = {
        "settings": {
            **info,
            "batch_size": settings.batch_size,
            "recall": settings.recall,
            "items": len(items),
            "processes": shard.world_size,
            "bootstrap": {"resamples": RESAMPLES, "level": LEVEL, "seed": SEED, "over": "items"},
        },
        "policies": summary,
        "describe": {name: policy.describe() for name, policy in resolved.items()},
    }
    (out / RESULTS).write_text(json.dumps(results, indent=2))
    plot_summary(summary, out / PLOT, title=f"plphp eval: {info.get('model', 'model')}, {len(items)} items")
    if console is not None:
        console.print(summary_table(summary))
        console.print(f"wrote {out / RESULTS}, {out / PLOT} and {out / RECORDS}")
    return results


def _named(specs: Sequence[Any]) -> dict[str, Any]:
    """Name each policy spec: a preset by its name, a policy file by its `name:` or stem (its path if two clash)."""
    labels = [_label(spec) for spec in specs]
    named = {}
    for label, spec in zip(labels, specs):
        named[label if labels.count(label) == 1 else str(spec)] = spec
    return named


def _label(spec: Any) -> str:
    if not str(spec).endswith((".yaml", ".yml", ".toml")):
        return str(spec)
    try:
        return load_policy(spec).name
    except PlphpError:  # reported, with its reason, when the policy is loaded to run
        return Path(spec).stem


def _done(out: Path) -> set[tuple[str, str]]:
    return {(r["policy"], r["id"]) for r in read_all_records(out)}


def _finished(out: Path, items: Sequence[EvalItem], policies: Mapping[str, Policy]) -> int:
    """Items every policy has answered already."""
    done = _done(out)
    return sum(all((name, item.id) in done for name in policies) for item in items)


def _results_done(out: Path, items: Sequence[EvalItem], policies: Mapping[str, Policy]) -> tuple[int, int]:
    """(policy, item) results already in the folder, and how many the run needs."""
    done = _done(out)
    return sum((name, item.id) in done for name in policies for item in items), len(policies) * len(items)
