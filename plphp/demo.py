"""`plphp demo`: prune a small model that the project builds itself (no downloads).

The model has a real architecture (LLaVA-OneVision by default) with random weights, so its answers
are not meaningful; what the demo shows is the machinery: the same `generate()` call unpruned and
pruned, the per-layer report, and the KV bytes saved.
"""

from __future__ import annotations

import time

import torch
from rich.console import Console

from plphp.backends.loading import chat_inputs
from plphp.backends.session import apply
from plphp.backends.tiny import build_tiny_model, build_tiny_processor, make_image
from plphp.policy import load_policy


def run_demo(console: Console, arch: str = "llava_onevision", policy: str = "plphp", max_new_tokens: int = 24) -> None:
    """Build the tiny model, generate unpruned and pruned, print answers and the report."""
    resolved = load_policy(policy)
    with console.status(f"building a tiny {arch} model (random weights)"):
        # 12 layers, so that the default start layer (2) leaves a representative share unpruned
        model = build_tiny_model(arch, seed=0, num_layers=12)
        processor = build_tiny_processor(arch)
    samples = [
        ("describe the two pictures", [make_image(96, 64, seed=1), make_image(64, 96, seed=2)]),
        ("what is in the picture", [make_image(128, 96, seed=3)]),
    ]
    inputs = chat_inputs(processor, samples, model.device)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False}
    console.print(f"[bold]model:[/bold] tiny {type(model).__name__}, {model.num_parameters() / 1e6:.2f} M parameters")
    console.print(f"[bold]policy:[/bold] {resolved.describe()}")
    with torch.inference_mode():
        start = time.perf_counter()
        plain = model.generate(**inputs, **settings)
        plain_seconds = time.perf_counter() - start
        start = time.perf_counter()
        with apply(model, resolved) as session:
            pruned = model.generate(**inputs, **settings)
        pruned_seconds = time.perf_counter() - start
    prompt_length = inputs["input_ids"].shape[1]
    for index, (question, _) in enumerate(samples):
        console.print(f"\n[bold]Q{index + 1}:[/bold] {question}")
        console.print(f"  unpruned: {processor.decode(plain[index, prompt_length:], skip_special_tokens=True)}")
        console.print(
            f"  {resolved.name:>8}: {processor.decode(pruned[index, prompt_length:], skip_special_tokens=True)}"
        )
    report = session.report
    console.print()
    console.print(report.table())
    same = sum(bool(torch.equal(a, b)) for a, b in zip(plain, pruned))
    console.print(
        f"KV cache of the prompt: {report.kv_bytes_before:,} -> {report.kv_bytes_after:,} bytes "
        f"({report.kv_reduction:.1%} less); vision KV removed: {report.vision_kv_reduction:.1%}; "
        f"{same}/{len(samples)} answers unchanged; wall time {plain_seconds:.2f}s unpruned, {pruned_seconds:.2f}s pruned "
        "(a tiny model on CPU: times say nothing about speed-ups, see benchmarks/)"
    )
