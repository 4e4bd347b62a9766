"""`plphp demo`: synthetic grounded questions through a small model that the project builds itself.

By default the model is the grid model (`plphp.models.grid`): a tiny LLaVA trained by the
project on these tasks and shipped with it, so its answers can be checked against the references.
`arch` may instead name a tiny random-weight architecture (Qwen2-VL, LLaVA-OneVision, ...), whose
answers mean nothing but whose caches and layouts are those of the real models. The demo shows
questions from `plphp.tasks` (one of each kind) answered with and without pruning in one batch, the
per-layer report, the attention recall of the kept entries, and a PNG of which image patches each
KV head of one layer kept
(`plphp.inspect.patches`, the picture `plphp inspect` draws too).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from plphp.backends.inputs import chat_inputs
from plphp.backends.recall import recall_for
from plphp.backends.session import apply
from plphp.errors import ConfigError
from plphp.inspect.patches import kept_patches_figure
from plphp.models.builtin import GRID, GRID_V2, load_builtin_model, task_layout
from plphp.policy import load_policy
from plphp.registry import get_registry
from plphp.report import PruningReport
from plphp.tasks import KINDS, exact_match, make_tasks


def run_demo(
    console: Console,
    arch: str = GRID,
    policy: str = "plphp",
    max_new_tokens: int = 24,
    png: str | Path | None = "plphp-demo.png",
    layer: int | None = None,
) -> None:
    """Load the demo model (`arch`: "grid" or a tiny architecture), answer one synthetic question of
    each kind unpruned and pruned, print the report and the attention recall, and write the
    kept-patches PNG (`png=None`: no picture)."""
    resolved = load_policy(policy)
    _check_png(png)
    with console.status(f"loading the {arch} model"):
        model, processor, described = load_builtin_model(arch)
    adapter = get_registry().adapter_for(model)
    if layer is not None and not 0 <= layer < adapter.num_layers:
        raise ConfigError(
            f"--layer: {layer} is not a layer of the {arch} model, which has {adapter.num_layers} decoder layers; "
            f"allowed are 0 to {adapter.num_layers - 1}"
        )
    session = apply(model, resolved)  # refuses a layer range this model does not have, before anything runs
    trained = arch in (GRID, GRID_V2)
    tasks = make_tasks(len(KINDS), seed=0, kinds=KINDS, max_images=3, layout=task_layout(arch))
    images = [task.images() for task in tasks]
    inputs = chat_inputs(processor, [(task.question, pictures) for task, pictures in zip(tasks, images)], model.device)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False}
    console.print(
        f"[bold]model:[/bold] {described}; {type(model).__name__}, {model.num_parameters() / 1e6:.2f} M parameters"
    )
    console.print(f"[bold]policy:[/bold] {resolved.describe()}")
    with torch.inference_mode():
        start = time.perf_counter()
        plain = model.generate(**inputs, **settings)
        plain_seconds = time.perf_counter() - start
        start = time.perf_counter()
        with session:
            pruned = model.generate(**inputs, **settings)
        pruned_seconds = time.perf_counter() - start
    report = session.report
    recall = _recall(model, inputs, report, settings)
    prompt_length = inputs["input_ids"].shape[1]
    correct = {"unpruned": 0, resolved.name: 0}
    answers: dict[str, list[str]] = {"unpruned": [], resolved.name: []}
    for index, task in enumerate(tasks):
        console.print(f"\n[bold]Q{index + 1}[/bold] ({len(task.scenes)} image(s)): {task.question}")
        console.print(f"  reference: {task.answer}")
        for label, output in (("unpruned", plain), (resolved.name, pruned)):
            answer = processor.decode(output[index, prompt_length:], skip_special_tokens=True).strip()
            answers[label].append(answer)
            right = exact_match(answer, task.answer)
            correct[label] += right
            mark = (" [green]right[/green]" if right else " [red]wrong[/red]") if trained else ""
            console.print(f"  {label + ':':<10} {answer}{mark}")
    console.print()
    if trained:
        console.print(
            f"exact match: unpruned {correct['unpruned']}/{len(tasks)}, {resolved.name} "
            f"{correct[resolved.name]}/{len(tasks)} (`plphp eval` scores hundreds of questions)"
        )
    console.print(report.table())
    # compared as text: a batch that stops one step later pads every row, so its token rows differ in length
    same = sum(a == b for a, b in zip(answers["unpruned"], answers[resolved.name]))
    console.print(
        f"KV cache of the prompt: {report.kv_bytes_before:,} -> {report.kv_bytes_after:,} bytes "
        f"({report.kv_reduction:.1%} less); vision KV removed: {report.vision_kv_reduction:.1%}; "
        f"{same}/{len(tasks)} answers unchanged; wall time {plain_seconds:.2f}s unpruned, {pruned_seconds:.2f}s pruned "
        "(a tiny model on CPU: times say nothing about speed-ups, see benchmarks/)"
    )
    if recall is not None:
        console.print(
            f"attention recall: {recall:.3f} of the unpruned decoding steps' attention falls on the entries "
            f"{resolved.name} keeps (1.0 = nothing it drops is looked at)"
        )
    if png is not None and report.layers:
        chosen = layer if layer is not None else _most_pruned_layer(report)
        title = (
            f"{resolved.name} on the {'grid model v2' if arch == GRID_V2 else 'grid model'}"
            if trained
            else f"{resolved.name} on a tiny {arch} model (random weights)"
        )
        path = kept_patches_figure(report, inputs, images, chosen, png, adapter, title=title)
        console.print(f"wrote {path}: the image patches each KV head of layer {chosen} kept, per question and image")


def _check_png(png: str | Path | None) -> None:
    """Refuse a picture path that cannot be written, before the demo runs."""
    if png is None:
        return
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(png)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if path.is_dir():
        raise ConfigError(f"--png: {str(path)!r} is a directory; give a file name such as plphp-demo.png")
    if path.suffix.lower().lstrip(".") not in formats:
        raise ConfigError(
            f"--png: {str(path)!r} has no picture extension; allowed are {', '.join('.' + f for f in formats)}"
        )


def _recall(model: Any, inputs: Any, report: PruningReport, settings: dict) -> float | None:
    if not any(layer.pruned for layer in report.layers):
        return None
    results, _ = recall_for(model, inputs, {"policy": report}, **settings)
    return results["policy"].overall()


def _most_pruned_layer(report: PruningReport) -> int:
    pruned = [layer for layer in report.layers if layer.pruned] or report.layers
    return min(pruned, key=lambda layer: (float(layer.retention.mean()), layer.layer_idx)).layer_idx
