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


def timed_prefill(model, input_ids, policy: str | None) -> tuple[float, float]:
    """Seconds of one prefill, and the vision-KV reduction of the report (0 for plain)."""
    gc.collect()
    with torch.inference_mode():
        if policy is None:
            start = time.perf_counter()
            model(input_ids, use_cache=True)
            return time.perf_counter() - start, 0.0
        with plphp.apply(model, policy) as session:
            start = time.perf_counter()
            model(input_ids, use_cache=True)
            elapsed = time.perf_counter() - start
        return elapsed, session.report.vision_kv_reduction


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
    reduction: dict[str, float] = {}
    for round_ in range(args.runs):
        for variant in variants:
            seconds, kv = timed_prefill(model, input_ids, variant)
            times[label[variant]].append(seconds)
            reduction[label[variant]] = kv
            print(f"  round {round_ + 1}/{args.runs} {label[variant]:<12} {seconds:7.2f} s", flush=True)
    plain = times["plain"]
    results = {}
    print(f"\n{'variant':<12} {'median s':>9} {'min-max s':>15} {'speedup':>8} {'paired':>7} {'vision KV removed':>18}")
    for name, values in times.items():
        paired = statistics.median(p / v for p, v in zip(plain, values, strict=True))
        speedup = statistics.median(plain) / statistics.median(values)
        results[name] = {
            "seconds": values,
            "median_s": statistics.median(values),
            "speedup": speedup,
            "paired_speedup": paired,
            "vision_kv_removed": reduction[name],
        }
        print(
            f"{name:<12} {statistics.median(values):9.2f} {min(values):7.2f}-{max(values):<7.2f} "
            f"{speedup:7.2f}x {paired:6.2f}x {reduction[name]:17.1%}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        setup = {k: v for k, v in vars(args).items() if k != "json"}
        setup.update(num_vision=num_vision, torch_threads=torch.get_num_threads(), torch=torch.__version__)
        Path(args.json).write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
