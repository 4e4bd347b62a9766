"""Answer quality under pruning on the trained grid model: policies side by side at three budgets.

The grid model (`plphp.models.grid`) answers the synthetic grid questions, so pruning shows
in real answers. Every policy runs on the same held-out items (`make_tasks(split="test")`) in one
`plphp.evaluation.evaluate` call (interleaved per batch), with exact match for single-image and
multi-image questions, prompt KV bytes per item, the share of vision KV kept, and attention recall.

Budgets are the retention `r` of the pruned layers (from the start layer on): `plphp` keeps
`r ± Δr` by its tiers (Δr = r / 3, the default's ratio), `fastv` (prefill stage), `fastv-kv`
(its keep-set in the cache only) and `random` keep `r` in every pruned layer; `random-tiers` uses
plphp's own per-layer budgets with random tokens, the comparison at exactly equal KV (`--extended`
adds plphp-question and random tokens at its budgets, SnapKV and AdaKV at `r`). The
"vision kept" column is what each policy really kept.

    OMP_NUM_THREADS=1 python benchmarks/grid_quality.py --items 500 --out /tmp/grid-quality \\
        --markdown benchmarks/results/grid-quality.md --json benchmarks/results/grid-quality.json
    OMP_NUM_THREADS=1 python benchmarks/grid_quality.py --windows --items 500 --out /tmp/grid-windows
    OMP_NUM_THREADS=1 python benchmarks/grid_quality.py --model plphp/models/grid_v2 --extended --items 500 \\
        --out /tmp/grid-v2-quality --markdown benchmarks/results/grid-v2-quality.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console

from plphp.bench.environment import environment
from plphp.evaluation.dataset import builtin_items
from plphp.evaluation.run import evaluate
from plphp.evaluation.runner import EvalSettings
from plphp.models.builtin import task_layout
from plphp.models.grid import GRID_MODEL_DIR, load_grid_model
from plphp.policy import load_policy

BUDGETS = (0.5, 0.3, 0.15)
WINDOWS = (1, 8, 32, "question")


def budget_policies(budgets=BUDGETS, extended: bool = False) -> dict:
    """name -> policy: full, and each compared policy at each budget (`extended`: + plphp-question, snapkv, adakv)."""
    policies = {"full": load_policy("full")}
    for r in budgets:
        tiers = {"retention": r, "delta": round(r / 3, 4)}
        policies[f"plphp r={r}"] = load_policy("plphp", allocator=tiers)
        policies[f"fastv r={r}"] = load_policy("fastv", allocator={"retention": r})
        policies[f"fastv-kv r={r}"] = load_policy("fastv-kv", allocator={"retention": r})
        policies[f"random r={r}"] = load_policy("random", allocator={"retention": r})
        policies[f"random-tiers r={r}"] = load_policy("plphp", allocator=tiers, selector={"name": "random", "seed": 0})
        if extended:
            question = {"allocator": tiers, "collector": {"window": "question"}}
            policies[f"plphp-question r={r}"] = load_policy("plphp", **question)
            policies[f"random-tiers-question r={r}"] = load_policy(
                "plphp", **question, selector={"name": "random", "seed": 0}
            )
            policies[f"snapkv r={r}"] = load_policy("snapkv", allocator={"retention": r})
            policies[f"adakv r={r}"] = load_policy("adakv", allocator={"retention": r})
    return policies


def window_policies(budgets=(0.3, 0.15)) -> dict:
    """name -> policy: plphp with each observation window of its collector, at the given budgets."""
    policies = {"full": load_policy("full")}
    for r in budgets:
        for window in WINDOWS:
            policies[f"plphp r={r} window={window}"] = load_policy(
                "plphp", collector={"window": window}, allocator={"retention": r, "delta": round(r / 3, 4)}
            )
    return policies


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def markdown(results: dict, command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        "| policy | vision KV kept | exact match | single-image | multi-image | KV per item (KiB) | recall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results["policies"].items():
        kinds = row["by_kind"]
        recall = row["recall"]
        lines.append(
            f"| {name} | {_pct(row['vision_kv_kept'])}% | {_pct(row['exact_match'])}% "
            f"| {_pct(kinds.get('single-image', {}).get('exact_match'))}% "
            f"| {_pct(kinds.get('multi-image', {}).get('exact_match'))}% "
            f"| {row['kv_bytes_after'] / 1024:.1f} | {'—' if recall is None else f'{recall:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500, help="held-out items (the kinds take turns)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--windows", action="store_true", help="compare plphp's observation windows instead")
    parser.add_argument(
        "--extended", action="store_true", help="add plphp-question (and random at its budgets), snapkv, adakv"
    )
    parser.add_argument("--no-recall", action="store_true", help="skip attention recall (one pass fewer)")
    parser.add_argument("--model", type=Path, default=None, help="grid model directory (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=Path("grid-quality-out"), help="plphp eval output folder")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true", help="discard earlier results in --out instead of resuming")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    console = Console()
    model, processor = load_grid_model(args.model)
    layout = task_layout(args.model or GRID_MODEL_DIR)  # the pictures the model was trained on
    items = builtin_items(args.items, seed=0, layout=layout)
    policies = window_policies() if args.windows else budget_policies(extended=args.extended)
    results = evaluate(
        model,
        processor,
        items,
        policies=policies,
        out_dir=args.out,
        settings=EvalSettings(batch_size=args.batch_size, max_new_tokens=16, recall=not args.no_recall),
        run_info={"model": str(args.model or "grid (shipped)"), "dataset": f"built-in, seed 0, {args.items}, {layout}"},
        console=console,
        overwrite=args.overwrite,
    )
    command = " ".join(["python", "benchmarks/grid_quality.py", *(argv if argv is not None else sys.argv[1:])])
    results["environment"] = environment()
    results["command"] = command
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results, command)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    console.print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
