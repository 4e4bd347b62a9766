"""plphp against NVIDIA kvpress on the Qwen2-0.5B shape: KV bytes held and decode speed, one interleaved session.

kvpress runs in its own virtualenv (`make peer-kvpress`) as a worker process; this process runs plphp,
and decode steps alternate between the two (docs/benchmarks.md, "Peer comparison: kvpress").

    make peer-kvpress
    python benchmarks/peers/kvpress.py --json benchmarks/results/peer-kvpress.json \
        --markdown benchmarks/results/peer-kvpress.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch
from rich.console import Console

from plphp.bench.environment import environment
from plphp.bench.peer import PAIRS, PEER_PYTHON, KvpressWorker, PeerSetup, matched_retention, run_peer_comparison
from plphp.bench.peer_summary import MEMORY_HEADER, SPEED_HEADER, summarize, table_rows, write_outputs
from plphp.bench.synthetic import QWEN2_05B
from plphp.bench.workload import Workload
from plphp.errors import PlphpError
from plphp.tables import FitTable

SYNTHETIC_NOTE = (
    "synthetic prefill on both sides: random keys and values of the real shapes; plphp's collector scores them "
    "from a random observation query through the session's own path, kvpress's press through its own forward "
    "hook (inside `with press(model):`) from random observation hidden states; decode cost depends only on the "
    "entries held"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default=str(PEER_PYTHON), help="the peer virtualenv's python")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--vision-tokens", type=int, default=1936)
    parser.add_argument("--text-tokens", type=int, default=64, help="half before the vision block, half after")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--compression", type=float, default=0.7, help="kvpress's compression_ratio")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=QWEN2_05B["num_hidden_layers"])
    parser.add_argument("--prefill", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--pairs", nargs="+", choices=[p.label for p in PAIRS], help="default: all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both processes")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    console = Console()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the worker inherits it
    try:
        workload = Workload(
            batch=args.batch, vision_tokens=args.vision_tokens, text_tokens=args.text_tokens, new_tokens=args.new_tokens
        )
        setup = PeerSetup(
            workload=workload,
            compression=args.compression,
            rounds=args.rounds,
            prefill=args.prefill,
            model_config={**QWEN2_05B, "num_hidden_layers": args.layers, "vocab_size": 4096},
        )
        matched_retention(workload, args.compression)  # a bad pairing fails before the worker starts
        pairs = [p for p in PAIRS if args.pairs is None or p.label in args.pairs]
        load_before = os.getloadavg()[0]
        with KvpressWorker.start(args.peer_python, args.threads) as worker:
            raw = run_peer_comparison(setup, worker, pairs, progress=lambda m: console.log(m))
    except PlphpError as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    summary = summarize(raw, workload, setup.model_config)
    result = {
        "setup": {
            "command": " ".join(["python", *sys.argv]),
            "environment": environment(),
            "peer": raw["peer"],
            "workload": dataclasses.asdict(workload),
            "prompt_length": workload.prompt_length,
            "model_config": setup.model_config,
            "weights_fingerprint": raw["weights_fingerprint"],
            "compression": setup.compression,
            "retention": raw["retention"],
            "kept_per_head": raw["kept_per_head"],
            "prefill": setup.prefill,
            "note": SYNTHETIC_NOTE if setup.prefill == "synthetic" else "real prefill on both sides",
            "rounds": setup.rounds,
            "memory_method": raw["memory_method"],
            "load_avg_before": load_before,
            "load_avg_per_round": [round(r["load_avg_1min"], 2) for r in raw["rounds"]],
        },
        "pairs": raw["pairs"],
        "summary": summary,
        "warmups": raw["warmups"],
        "rounds": raw["rounds"],
    }
    memory, speed = table_rows(summary)
    for title, header, rows in (("KV held", MEMORY_HEADER, memory), ("decode", SPEED_HEADER, speed)):
        table = FitTable(title=f"plphp vs kvpress: {title}")
        for column in header:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(f"setup: {result['setup']['note']}; load {load_before:.2f} before; targets {summary['targets']}")
    write_outputs(result, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
