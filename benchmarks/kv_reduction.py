"""Vision-KV reduction of a policy on a LLaVA-OneVision-0.5B-shaped model, read from the report.

The language model has the shape of LLaVA-OneVision-Qwen2-0.5B (24 layers, hidden 896, 14 query
heads, 2 KV heads, head_dim 64; the vocabulary is the tiny tokenizer's) with random weights, and
the project's tiny vision tower, so it runs on a CPU in seconds. The reduction depends on the
layers' vision attention γ (which tier each layer falls in) and on the start layer, so the figure
is printed per policy together with the tiers that produced it.

    python benchmarks/kv_reduction.py --policy plphp --policy random
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rich.console import Console
from rich.table import Table

import plphp
from plphp.backends.inputs import chat_inputs
from plphp.models import build_tiny_model, build_tiny_processor, make_image

ONEVISION_05B = dict(
    num_layers=24,
    hidden_size=896,
    num_heads=14,
    num_kv_heads=2,
    text_config__intermediate_size=4864,
    text_config__initializer_range=0.02,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", help="preset or policy file (repeatable); default plphp")
    parser.add_argument(
        "--images",
        type=int,
        default=1,
        help="images in the prompt (LLaVA-OneVision tiles a lone image; several share a base tile each)",
    )
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    policies = args.policy or ["plphp"]
    console = Console()
    torch.manual_seed(0)
    with console.status("building a LLaVA-OneVision-0.5B-shaped model (random weights)"):
        model = build_tiny_model("llava_onevision", seed=0, **ONEVISION_05B)
        processor = build_tiny_processor("llava_onevision")
    images = [make_image(256 + 32 * i, 192, seed=i) for i in range(args.images)]
    inputs = chat_inputs(processor, [("describe the pictures in detail", images)])
    console.print(
        f"model: {model.num_parameters() / 1e6:.0f} M parameters, prompt {inputs['input_ids'].shape[1]} tokens, "
        f"threads {torch.get_num_threads()}"
    )
    table = Table(title="vision-KV reduction (from the session report)")
    for column in (
        "policy",
        "vision tokens",
        "retention per layer (min/mean/max)",
        "layers per tier",
        "vision KV removed",
        "prompt KV removed",
        "seconds",
    ):
        table.add_column(column, justify="right")
    results = []
    for spec in policies:
        policy = plphp.load_policy(spec)
        start = time.perf_counter()
        with plphp.apply(model, policy) as session, torch.inference_mode():
            model.generate(**inputs, max_new_tokens=args.new_tokens, do_sample=False)
        seconds = time.perf_counter() - start
        report = session.report
        rates = torch.stack([layer.retention for layer in report.layers])[:, 0]
        tiers = {f"{float(r):.2f}": int((rates == r).sum()) for r in rates.unique()}
        table.add_row(
            policy.name,
            str(report.num_vision[0]),
            f"{rates.min():.2f} / {rates.mean():.2f} / {rates.max():.2f}",
            ", ".join(f"{k}: {v}" for k, v in sorted(tiers.items())),
            f"{report.vision_kv_reduction:.1%}",
            f"{report.kv_reduction:.1%}",
            f"{seconds:.1f}",
        )
        results.append(
            {
                "policy": policy.describe(),
                "vision_kv_reduction": report.vision_kv_reduction,
                "kv_reduction": report.kv_reduction,
                "tiers": tiers,
                "report": report.to_dict(),
            }
        )
    console.print(table)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
