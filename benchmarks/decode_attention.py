"""K/V read bandwidth of the one-query decode attention kernels alone, at a named model's shape.

One cache per decoder layer, every layer's attention called in turn, kernels interleaved round by
round; plphp's grouped kernel against torch's sdpa (`enable_gqa`), each as a
share of the measured read bandwidth and of a sum over the same K/V run in the same rounds (the
read floor; plphp.bench.kernel). The score product's GFLOP/s at 1, 7
(the group size of the OneVision-0.5B shape), 16 and 64 query rows shows what bounds it.

    OMP_NUM_THREADS=1 python benchmarks/decode_attention.py --batch 4,8 --threads 1 \
        --json benchmarks/results/decode-attention-0.5b.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from plphp.bench.environment import environment
from plphp.bench.kernel import matmul_rates, measure_kernels
from plphp.bench.shapes import get_shape

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="llava-onevision-qwen2-0.5b", help="a named shape (plphp bench --list-shapes)"
    )
    parser.add_argument("--batch", default="4,8", help="comma-separated batch sizes")
    parser.add_argument("--vision-tokens", type=int, default=6000)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bandwidth-mb", type=int, default=256, help="buffer of the bandwidth kernel, MB")
    parser.add_argument(
        "--mlp-between", action="store_true", help="run each layer's MLP products (untimed) before its attention"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shape = get_shape(args.model)
    context = args.vision_tokens + args.text_tokens
    console = Console()
    results = []
    for batch in (int(part) for part in args.batch.split(",")):
        with console.status(f"batch {batch}"):
            result = measure_kernels(
                shape,
                batch,
                context,
                dtype=DTYPES[args.dtype],
                device=args.device,
                rounds=args.rounds,
                bandwidth_mb=args.bandwidth_mb,
                between_layers=args.mlp_between,
            )
            if args.device == "cpu" and args.dtype == "float32":
                result["score_product_GFLOPs_by_rows"] = matmul_rates(shape, batch, context)
        result["load_avg_after"] = list(os.getloadavg())
        results.append(result)
    title = f"one-query decode attention, {shape.name}, {args.dtype}, {context} cached tokens, {shape.layers} layers"
    title += ", MLP products between layers" if args.mlp_between else ""
    table = Table(title=title)
    for column in ("batch", "kernel", "ms / call", "K/V GB/s", "share of read BW", "of the read floor"):
        table.add_column(column, justify="left" if column == "kernel" else "right")
    lines = [
        f"# {title}",
        "",
        "| batch | kernel | ms / call | K/V GB/s | share of read BW | of the read floor |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        for name, figures in result["kernels"].items():
            seconds = figures["seconds_per_call"]
            cells = (
                str(result["batch"]),
                name,
                f"{seconds['median'] * 1e3:.2f} ({seconds['min'] * 1e3:.2f}–{seconds['max'] * 1e3:.2f})",
                f"{figures['read_GBps']:.1f}",
                f"{figures['bandwidth_share']:.0%}",
                f"{figures['of_read_floor']:.0%}",
            )
            table.add_row(*cells)
            lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    notes = []
    for result in results:
        bandwidth = result["bandwidth"]
        note = (
            f"batch {result['batch']}: read bandwidth {bandwidth['read_GBps']:.1f} GB/s "
            f"({bandwidth['read_GBps_min']:.1f}–{bandwidth['read_GBps_max']:.1f}), "
            f"{result['kv_bytes_per_call'] / 2**20:.1f} MiB of K/V per call, load after {result['load_avg_after']}"
        )
        if "score_product_GFLOPs_by_rows" in result:
            rates = ", ".join(
                f"{rows} rows {rate:.0f}" for rows, rate in result["score_product_GFLOPs_by_rows"].items()
            )
            note += f"; score product GFLOP/s by query rows: {rates}"
        notes.append(note)
        console.print(f"- {note}")
    env = environment()
    payload = {"command": "python benchmarks/decode_attention.py " + " ".join(argv or os.sys.argv[1:])}
    payload |= {"environment": env, "results": results, "notes": notes}
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    if args.markdown is not None:
        lines = [*lines, "", *(f"- {note}" for note in notes), "", "```bash", payload["command"], "```", ""]
        args.markdown.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
