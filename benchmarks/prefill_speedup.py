"""Prefill speedup of the prefill- and input-stage policies (FastV, ..., random-input) against unpruned prefill.

One process, interleaved after a warm-up of each (plain, fastv, ..., plain, fastv, ...):

    plain        `model(input_ids, use_cache=True)`, sdpa, no plphp
    <preset>     the same inside `with plphp.apply(model, <preset>):`

With `--shape llava` (input-stage presets: visionzip, fastervlm, ...) the model is a real LLaVA with
that decoder and a tiny CLIP tower at LLaVA-1.5's geometry (576 tokens per image), and the prompt has
`--images` images among `--text-tokens` text tokens. Otherwise the model is the Qwen2-0.5B-shaped
text model of `plphp.bench.synthetic` (hidden 896, 24 layers,
14 query / 2 KV heads, random weights, float32, sdpa) with one token id declared a vision token by
`SyntheticVision`, a run-time adapter plugin; the prompt holds `--tokens` ids of which
`--vision-fraction` are vision tokens. The figure is the ratio of median prefill times (and the
median of per-round ratios, which drifts less on a shared machine); thread settings and the
machine's load are printed with it.

Usage:
    .venv/bin/python benchmarks/prefill_speedup.py                            # fastv, 4608 tokens (4147 vision)
    .venv/bin/python benchmarks/prefill_speedup.py --policies fastv pyramiddrop vtw --runs 3 --json out.json
    .venv/bin/python benchmarks/prefill_speedup.py --shape llava --policies visionzip fastervlm random-input
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

import plphp
from plphp.bench.environment import environment
from plphp.bench.prefill import interleaved_prefills, speedup, warm_up
from plphp.bench.synthetic import SyntheticVision, image_inputs, llava_qwen2_model, qwen2_text_model, vision_prompt
from plphp.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", default=["fastv"], help="prefill-stage presets (default fastv)")
    parser.add_argument("--tokens", type=int, default=4608, help="prompt length (default 4608)")
    parser.add_argument("--vision-fraction", type=float, default=0.9, help="share of vision tokens (default 0.9)")
    parser.add_argument("--layers", type=int, default=24, help="decoder layers (default 24, the real 0.5B)")
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary (default 4096; attention unchanged)")
    parser.add_argument(
        "--shape",
        choices=["text", "llava"],
        default="text",
        help="text: the text model with synthetic vision tokens; llava: LLaVA with a tiny CLIP tower at 336 px "
        "(576 tokens per image, --images of them, --text-tokens around), for the input stage",
    )
    parser.add_argument("--images", type=int, default=1, help="--shape llava: images (default 1)")
    parser.add_argument("--text-tokens", type=int, default=64, help="--shape llava: text tokens (default 64)")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for name in args.policies:
        if plphp.load_policy(name).stage not in ("prefill", "input"):
            parser.error(f"--policies: {name!r} is not a prefill- or input-stage preset")

    vision_id = args.vocab - 1
    if args.shape == "llava":
        model = llava_qwen2_model(args.layers, args.vocab)
        input_ids = image_inputs(model, args.text_tokens, args.images)
        ids = input_ids["input_ids"]
    else:
        model = qwen2_text_model(args.layers, args.vocab)
        try:
            input_ids = ids = vision_prompt(args.tokens, args.vision_fraction, vision_id)
        except ConfigError as exc:
            raise SystemExit(str(exc)) from None
    num_vision = int((ids == vision_id).sum())
    variants = {"plain": None, **{p: p for p in args.policies}}
    print(
        f"Qwen2-0.5B shape ({args.shape}), {args.layers} layers, {ids.shape[1]} tokens ({num_vision} vision), "
        "float32, sdpa; "
        f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    def on_round(index, results, load):
        for name, r in results.items():
            wall, cpu = r["forward_s"], r["forward_cpu_s"]
            print(f"  round {index + 1}/{args.runs} {name:<12} {wall:7.2f} s wall {cpu:7.2f} s CPU", flush=True)

    with SyntheticVision(
        vision_token_id=vision_id, architectures=() if args.shape == "llava" else ("Qwen2ForCausalLM",)
    ):
        warm_up(model, input_ids, variants)
        runs, _ = interleaved_prefills(model, input_ids, variants, args.runs, alternate=False, on_round=on_round)
    times = {name: [r["forward_s"] for r in rs] for name, rs in runs.items()}
    cpu_times = {name: [r["forward_cpu_s"] for r in rs] for name, rs in runs.items()}
    results = {}
    print(
        f"\n{'variant':<12} {'median s':>9} {'min-max s':>15} {'speedup':>8} {'paired':>7} "
        f"{'CPU speedup':>12} {'vision KV removed':>18}"
    )
    for name, values in times.items():
        row = results[name] = speedup(values, cpu_times[name], times["plain"], cpu_times["plain"])
        row["vision_kv_removed"] = runs[name][-1].get("vision_kv_reduction", 0.0)
        print(
            f"{name:<12} {statistics.median(values):9.2f} {min(values):7.2f}-{max(values):<7.2f} "
            f"{row['speedup']:7.2f}x {row['paired_speedup']:6.2f}x {row['cpu_speedup']:11.2f}x "
            f"{row['vision_kv_removed']:17.1%}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        setup = {k: v for k, v in vars(args).items() if k != "json"}
        setup.update(num_vision=num_vision, environment=environment())
        Path(args.json).write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
