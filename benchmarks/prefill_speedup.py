"""Prefill speedup of the prefill-stage policies (FastV, PyramidDrop, VTW) against unpruned prefill.

One process, interleaved after a warm-up of each (plain, fastv, ..., plain, fastv, ...):

    plain        `model(input_ids, use_cache=True)`, sdpa, no plphp
    <preset>     the same inside `with plphp.apply(model, <preset>):`

The model is the Qwen2-0.5B-shaped text model of `prefill_overhead.py` (hidden 896, 24 layers,
14 query / 2 KV heads, random weights, float32, sdpa) with one token id declared a vision token by a
run-time adapter plugin; the prompt holds `--tokens` ids of which `--vision-fraction` are vision
tokens. The figure is the ratio of median prefill times (and the median of per-round ratios, which
drifts less on a shared machine); thread settings and the machine's load are printed with it.

Usage:
    .venv/bin/python benchmarks/prefill_speedup.py                            # fastv, 4608 tokens (4147 vision)
    .venv/bin/python benchmarks/prefill_speedup.py --policies fastv pyramiddrop vtw --runs 3 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefill_overhead import SyntheticVisionAdapter, SyntheticVisionPlugin, build_model, build_prompt  # noqa: E402

import plphp  # noqa: E402
from plphp.bench.environment import environment  # noqa: E402


def timed_prefill(model, input_ids, policy: str | None) -> tuple[float, float, float]:
    """Wall and process-CPU seconds of one prefill, and the report's vision-KV reduction (0 for plain).

    CPU seconds count only this process's work, so they drift less than wall time when other
    processes share the cores (with one torch thread they are the compute the prefill needs).
    """
    gc.collect()
    with torch.inference_mode():
        session = plphp.apply(model, policy) if policy is not None else None
        with session if session is not None else contextlib.nullcontext():
            cpu, start = time.process_time(), time.perf_counter()
            model(input_ids, use_cache=True)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return wall, cpu, session.report.vision_kv_reduction if session is not None else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", default=["fastv"], help="prefill-stage presets (default fastv)")
    parser.add_argument("--tokens", type=int, default=4608, help="prompt length (default 4608)")
    parser.add_argument("--vision-fraction", type=float, default=0.9, help="share of vision tokens (default 0.9)")
    parser.add_argument("--layers", type=int, default=24, help="decoder layers (default 24, the real 0.5B)")
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary (default 4096; attention unchanged)")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for name in args.policies:
        if plphp.load_policy(name).stage != "prefill":
            parser.error(f"--policies: {name!r} is not a prefill-stage preset")

    vision_id = args.vocab - 1
    SyntheticVisionAdapter.vision_token_id = vision_id
    plphp.register_plugin(SyntheticVisionPlugin(), name="synthetic-vision")
    model = build_model(args.layers, args.vocab)
    input_ids = build_prompt(args.tokens, args.vision_fraction, 1, args.vocab, vision_id)
    num_vision = int((input_ids == vision_id).sum())
    variants: list[str | None] = [None, *args.policies]
    label = {None: "plain", **{p: p for p in args.policies}}
    print(
        f"Qwen2-0.5B shape, {args.layers} layers, {args.tokens} tokens ({num_vision} vision), float32, sdpa; "
        f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for variant in variants:  # warm-up
        timed_prefill(model, input_ids, variant)
    times: dict[str, list[float]] = {label[v]: [] for v in variants}
    cpu_times: dict[str, list[float]] = {label[v]: [] for v in variants}
    reduction: dict[str, float] = {}
    for round_ in range(args.runs):
        for variant in variants:
            wall, cpu, kv = timed_prefill(model, input_ids, variant)
            times[label[variant]].append(wall)
            cpu_times[label[variant]].append(cpu)
            reduction[label[variant]] = kv
            print(
                f"  round {round_ + 1}/{args.runs} {label[variant]:<12} {wall:7.2f} s wall {cpu:7.2f} s CPU", flush=True
            )
    results = {}
    print(
        f"\n{'variant':<12} {'median s':>9} {'min-max s':>15} {'speedup':>8} {'paired':>7} "
        f"{'CPU speedup':>12} {'vision KV removed':>18}"
    )
    for name, values in times.items():
        paired = statistics.median(p / v for p, v in zip(times["plain"], values, strict=True))
        speedup = statistics.median(times["plain"]) / statistics.median(values)
        cpu_speedup = statistics.median(cpu_times["plain"]) / statistics.median(cpu_times[name])
        results[name] = {
            "seconds": values,
            "cpu_seconds": cpu_times[name],
            "median_s": statistics.median(values),
            "speedup": speedup,
            "paired_speedup": paired,
            "cpu_speedup": cpu_speedup,
            "vision_kv_removed": reduction[name],
        }
        print(
            f"{name:<12} {statistics.median(values):9.2f} {min(values):7.2f}-{max(values):<7.2f} "
            f"{speedup:7.2f}x {paired:6.2f}x {cpu_speedup:11.2f}x {reduction[name]:17.1%}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        setup = {k: v for k, v in vars(args).items() if k != "json"}
        setup.update(num_vision=num_vision, environment=environment())
        Path(args.json).write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
