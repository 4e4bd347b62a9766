"""`plphp bench`: the command. Registered on the main app by `plphp.cli`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from plphp.errors import ConfigError, PlphpError

console = Console()

#: dtype names and their element sizes (torch is imported only when a run starts).
DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _parse_sequences(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--sequences: {text!r} is not a comma-separated list of integers (e.g. 1,8,32)") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--sequences: {text!r} must list integers >= 1")
    return values


def prediction_table(
    model: str, dtype: str, gbps: float, sequences: list[int], context: int, kept: float
) -> tuple[Table, list[dict[str, Any]]]:
    """The bandwidth model's decode step for a named shape, with no measurement."""
    from plphp.bench.bandwidth import predict
    from plphp.bench.shapes import get_shape

    shape = get_shape(model)
    size = DTYPES[dtype]
    weights = shape.decode_weight_bytes(size)
    rows = [
        predict(weights, shape.kv_bytes_per_token(size), context, n, kept, gbps * 1e9) | {"weight_bytes": weights}
        for n in sequences
    ]
    table = Table(
        title=f"bandwidth model: {shape.name} ({shape.checkpoint}), {dtype}, {gbps:g} GB/s, {context} tokens/sequence",
        caption=f"weights read per step {weights / 2**30:.2f} GiB; pruned: {kept:.0%} of the KV bytes kept",
    )
    for column in (
        "sequences",
        "KV GiB",
        "KV GiB pruned",
        "floor ms/step",
        "pruned ms/step",
        "speedup",
        "tokens/s",
        "tokens/s pruned",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["sequences"]),
            f"{row['kv_bytes'] / 2**30:.2f}",
            f"{row['kv_bytes_pruned'] / 2**30:.2f}",
            f"{row['step_s'] * 1e3:.2f}",
            f"{row['step_s_pruned'] * 1e3:.2f}",
            f"{row['speedup']:.2f}",
            f"{row['tokens_per_s']:.0f}",
            f"{row['tokens_per_s_pruned']:.0f}",
        )
    return table, rows


def _load(model: str, dtype: str, device: str, layers: int | None) -> tuple[Any, Any, str]:
    import torch

    from plphp.bench.shapes import SHAPES, build_shape_model, get_shape, is_named_shape, shape_of_model

    if is_named_shape(model):
        built = build_shape_model(model, dtype=getattr(torch, dtype), device=device, layers=layers)
        # The tiny shapes and reduced layer counts are described by what was built.
        shape = get_shape(model) if model in SHAPES and layers is None else shape_of_model(built, model)
        how = (
            f"{shape.name}: the language model of {shape.checkpoint} ({shape.layers} layers, hidden {shape.hidden}, "
            f"{shape.heads} heads / {shape.kv_heads} KV heads, vocabulary {shape.vocab}) with random weights and "
            "plphp's tiny vision tower (decoding never runs it)"
        )
        if layers is not None:
            how += f"; only {layers} decoder layers"
        return built, shape, how
    if layers is not None:
        raise ConfigError("--layers applies to named shapes only, not to a hub id or a local path")
    from plphp.backends.loading import load_model
    from plphp.models import register_processors
    from plphp.runconfig import ModelSection

    register_processors()  # so that a directory written by plphp.models.save_tiny loads too
    loaded, _ = load_model(ModelSection(path=model, dtype=dtype, device=device))
    return loaded, shape_of_model(loaded, model), f"{model} ({type(loaded).__name__}, weights from the checkpoint)"


def bench(
    model: Annotated[
        str,
        typer.Option(help="a named shape (random weights; see --list-shapes), a hub id or a local directory"),
    ] = "llava-onevision-qwen2-0.5b",
    policy: Annotated[
        list[str] | None,
        typer.Option(help="preset or policy file, repeatable; the unpruned DynamicCache run is always added"),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(help="FIELD=START:STOP:STEP or FIELD=V1,V2: one variant of the first policy per value"),
    ] = None,
    batch: Annotated[int, typer.Option(help="sequences decoded together")] = 1,
    vision_tokens: Annotated[int, typer.Option(help="vision tokens per sequence")] = 6000,
    text_tokens: Annotated[int, typer.Option(help="text tokens per sequence")] = 64,
    images: Annotated[int, typer.Option(help="vision blocks per sequence (the vision tokens split between them)")] = 1,
    new_tokens: Annotated[int, typer.Option(help="decode steps")] = 64,
    prefill: Annotated[
        str, typer.Option(help="'synthetic' (random K/V, decode-only figures) or 'real' (runs the model)")
    ] = "synthetic",
    rounds: Annotated[int, typer.Option(help="interleaved rounds after the warm-up")] = 3,
    interleave: Annotated[
        str,
        typer.Option(
            help="'steps': all caches live, decode steps alternate between variants (peak memory from the "
            "warm-ups, run alone); 'runs': whole runs alternate, each measuring its own peak"
        ),
    ] = "steps",
    warmup_tokens: Annotated[int, typer.Option(help="decode steps of each variant's warm-up run")] = 4,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda', 'cuda:N' or 'auto'")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16")] = "float32",
    threads: Annotated[int | None, typer.Option(help="torch.set_num_threads (default: torch's choice)")] = None,
    layers: Annotated[int | None, typer.Option(help="named shapes only: fewer decoder layers (smoke runs)")] = None,
    bandwidth_mb: Annotated[int, typer.Option(help="buffer of the bandwidth kernel, MB")] = 256,
    json_out: Annotated[Path | None, typer.Option("--json", help="write all figures and runs here")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="write a Markdown table here")] = None,
    plot_out: Annotated[
        Path | None, typer.Option("--plot", help="write a PNG: speedup and KV bytes vs retention")
    ] = None,
    predict_gbps: Annotated[
        float | None,
        typer.Option(help="measure nothing: print the bandwidth model's step for --model at this bandwidth (GB/s)"),
    ] = None,
    sequences: Annotated[str, typer.Option(help="with --predict-gbps: concurrent sequences, e.g. 1,8,32")] = "1,8,32",
    kept: Annotated[float, typer.Option(help="with --predict-gbps: share of the KV bytes pruning keeps")] = 0.5,
    list_shapes: Annotated[bool, typer.Option(help="list the named shapes and exit")] = False,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            help="e.g. 8GiB: per variant, the largest batch whose decode peak fits (peak RSS on CPU, "
            "max_memory_allocated on CUDA), then its tokens/s there; --batch is ignored"
        ),
    ] = None,
    probe_tokens: Annotated[int, typer.Option(help="with --memory-budget: decode steps of each sizing probe")] = 4,
    max_batch: Annotated[int, typer.Option(help="with --memory-budget: the largest batch tried")] = 4096,
    full_fast: Annotated[
        bool,
        typer.Option(
            help="add 'full-fast' (nothing pruned, every layer through plphp's grouped decode kernel): "
            "speedups against it are pruning's gain at equal kernels (not with --memory-budget)"
        ),
    ] = True,
) -> None:
    """Decode speed, KV bytes, peak memory and prefill cost of policies, interleaved, with a bandwidth model."""
    try:
        _bench(**locals())
    except PlphpError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _bench(**options: Any) -> None:
    from plphp.bench import output
    from plphp.bench.bandwidth import measure_bandwidth
    from plphp.bench.environment import environment
    from plphp.bench.runs import SYNTHETIC_NOTE, run_benchmark
    from plphp.bench.shapes import SHAPES, decode_weight_bytes
    from plphp.bench.summary import summary
    from plphp.bench.sweep import parse_sweep
    from plphp.bench.workload import FULL_FAST, UNPRUNED, Variant, Workload
    from plphp.policy import load_policy

    o = options
    if o["list_shapes"]:
        table = Table(title="named shapes (random weights, real language-model shapes)")
        for column in ("name", "from", "layers", "hidden", "heads / KV", "vocabulary"):
            table.add_column(column)
        for shape in SHAPES.values():
            table.add_row(
                shape.name,
                shape.checkpoint,
                str(shape.layers),
                str(shape.hidden),
                f"{shape.heads} / {shape.kv_heads}",
                str(shape.vocab),
            )
        console.print(table)
        return
    if o["dtype"] not in DTYPES:
        raise ConfigError(f"--dtype: {o['dtype']!r} is not allowed; use one of {', '.join(DTYPES)}")
    if o["predict_gbps"] is not None:
        if o["predict_gbps"] <= 0:
            raise ConfigError(f"--predict-gbps: {o['predict_gbps']} must be positive")
        if not 0.0 < o["kept"] <= 1.0:
            raise ConfigError(f"--kept: {o['kept']} is outside the allowed range 0 < kept <= 1")
        context = o["text_tokens"] + o["vision_tokens"]
        table, _ = prediction_table(
            o["model"], o["dtype"], o["predict_gbps"], _parse_sequences(o["sequences"]), context, o["kept"]
        )
        console.print(table)
        return
    if o["interleave"] not in ("steps", "runs"):
        raise ConfigError(f"--interleave: {o['interleave']!r} is not allowed; use 'steps' or 'runs'")
    if o["prefill"] not in ("synthetic", "real"):
        raise ConfigError(f"--prefill: {o['prefill']!r} is not allowed; use 'synthetic' or 'real'")
    import torch

    from plphp.backends.loading import resolve_device

    device = resolve_device(o["device"])
    if o["threads"] is not None:
        if o["threads"] < 1:
            raise ConfigError(f"--threads: {o['threads']} must be >= 1")
        torch.set_num_threads(o["threads"])
    workload = Workload(
        batch=o["batch"],
        vision_tokens=o["vision_tokens"],
        text_tokens=o["text_tokens"],
        images=o["images"],
        new_tokens=o["new_tokens"],
    )
    specs = o["policy"] or (["full", "plphp"] if o["sweep"] is None else ["plphp"])
    variants = [Variant(UNPRUNED)]
    labels = {UNPRUNED}
    if o["full_fast"] and o["memory_budget"] is None:
        variants.append(Variant(FULL_FAST, load_policy("full"), decode_attention="all"))
        labels.add(FULL_FAST)
    for spec in specs:
        resolved = load_policy(spec)
        label = resolved.name if resolved.name not in labels else Path(spec).stem
        labels.add(label)
        variants.append(Variant(label, resolved))
    if o["sweep"] is not None:
        parsed = parse_sweep(o["sweep"])
        base = specs[0]
        for value in parsed.values:
            policy = load_policy(base, **parsed.overrides(value))
            retention = value if parsed.field in ("retention", "allocator.retention") else None
            variants.append(Variant(f"{parsed.field}={value:g}", policy, retention))

    started = time.time()
    budget = None
    if o["memory_budget"] is not None:
        from plphp.bench.budget import parse_size

        budget = parse_size(o["memory_budget"])
        if o["probe_tokens"] < 1:
            raise ConfigError(f"--probe-tokens: {o['probe_tokens']} must be >= 1")
        if o["max_batch"] < 1:
            raise ConfigError(f"--max-batch: {o['max_batch']} must be >= 1")
    with console.status(f"building / loading {o['model']}"):
        model, shape, how = _load(o["model"], o["dtype"], str(device), o["layers"])
    if budget is not None:
        from plphp.bench.budget import budget_command

        budget_command(console, o, model, shape, how, variants, workload, budget, "plphp bench " + " ".join(_argv()))
        return
    weight_bytes = decode_weight_bytes(model)
    with console.status("measuring memory bandwidth"):
        bandwidth = measure_bandwidth(device, megabytes=o["bandwidth_mb"])
    setup = {
        "command": "plphp bench " + " ".join(_argv()),
        "environment": environment(),
        "uptime": _uptime(),
        "model": how,
        "device": str(device),
        "dtype": o["dtype"],
        "workload": workload.__dict__ | {"prompt_length": workload.prompt_length},
        "prefill": o["prefill"],
        "rounds": o["rounds"],
        "warmup_tokens": o["warmup_tokens"],
        "decode_weight_bytes": weight_bytes,
        "bandwidth": bandwidth.to_dict(),
    }
    total = len(variants) * (o["rounds"] + 1) if o["interleave"] == "runs" else len(variants) + o["rounds"]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("bench", total=total)

        def advance(description: str) -> None:
            if progress.tasks[task].description != "bench":
                progress.advance(task)
            progress.update(task, description=description)

        result = run_benchmark(
            model,
            variants,
            workload,
            prefill=o["prefill"],
            rounds=o["rounds"],
            bandwidth=bandwidth,
            setup=setup,
            warmup_tokens=o["warmup_tokens"],
            interleave=o["interleave"],
            progress=advance,
        )
        progress.advance(task)
    rows = summary(result, weight_bytes)
    result.setup["wall_seconds"] = time.time() - started
    result.setup["load_avg_end"] = list(os.getloadavg())
    notes = _notes(result, rows, workload, how)
    title = (
        f"plphp bench: {shape.name}, {o['dtype']}, batch {workload.batch}, {workload.vision_tokens} vision + "
        f"{workload.text_tokens} text tokens, {workload.new_tokens} new tokens, {o['prefill']} prefill"
    )
    if o["prefill"] == "synthetic":
        notes.insert(0, SYNTHETIC_NOTE)
    console.print(output.rich_table(rows, title, caption="median (min–max) of the interleaved runs"))
    for note in notes:
        console.print(f"- {note}")
    payload = {"setup": result.setup, "notes": notes, "rows": rows, "runs": [run.__dict__ for run in result.runs]}
    if o["json_out"] is not None:
        output.write_json(o["json_out"], payload)
        console.print(f"wrote {o['json_out']}")
    if o["markdown_out"] is not None:
        o["markdown_out"].write_text(output.markdown(rows, result.setup, [title, *notes]))
        console.print(f"wrote {o['markdown_out']}")
    if o["plot_out"] is not None:
        output.plot(rows, o["plot_out"], title)
        console.print(f"wrote {o['plot_out']}")


def _notes(result: Any, rows: list[dict[str, Any]], workload: Any, how: str) -> list[str]:
    from plphp.bench.environment import describe_kernel

    setup = result.setup
    env = setup["environment"]
    bandwidth = result.bandwidth
    threads = ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in env["env"].items())
    notes = [
        f"model: {how}",
        f"threads: torch {env['torch_num_threads']} (interop {env['torch_num_interop_threads']}), "
        f"{env['cpu_count']} CPUs; {threads}; {describe_kernel(env)}",
        f"load: {setup['uptime']}; 1-min load after each round "
        + ", ".join(f"{x:.2f}" for x in setup["load_avg_1min_per_round"]),
        f"bandwidth: read {bandwidth.read / 1e9:.1f} GB/s (min {bandwidth.read_min / 1e9:.1f}, max "
        f"{bandwidth.read_max / 1e9:.1f}), copy {bandwidth.copy / 1e9:.1f} GB/s; the model uses the read figure",
        f"peak memory: {setup['memory_method']}; the decode peak is reset after the prefill"
        + (
            f", measured in each variant's warm-up run (alone: prefill + {setup['warmup_tokens']} decode steps)"
            if setup.get("interleave") == "steps"
            else ""
        ),
        "interleaving: "
        + (
            "all variants' caches live, decode steps alternating between variants (A B C, C B A, ...)"
            if setup.get("interleave") == "steps"
            else "whole runs alternating (A B C, C B A, ...)"
        )
        + "; speedup = ratio of the median step times; paired = median over steps of the per-step ratio",
        f"weights read per decode step: {setup['decode_weight_bytes'] / 2**30:.2f} GiB",
    ]
    reference = next(row for row in rows if row["label"] == "unpruned")
    step, floor = reference["step_s"]["median"], reference["floor_step_s"]
    if step > 2 * floor:
        notes.append(
            f"the unpruned step ({step * 1e3:.0f} ms) is {step / floor:.1f}x its bytes floor ({floor * 1e3:.0f} ms): "
            "this device is not bandwidth-bound on this workload, so removed KV bytes save more time than "
            "the bandwidth model's ideal, which is then a lower bound of the speedup"
        )
    for row in rows:
        parts = [
            f"{group} layers {row[f'attention_read_Bps_{group}']['median'] / 1e9:.1f} GB/s "
            f"({row[f'attention_bandwidth_share_{group}']:.0%} of read)"
            for group in ("pruned", "other")
            if f"attention_read_Bps_{group}" in row
        ]
        if parts:
            notes.append(
                f"{row['label']}: attention {row['attention_s_per_step']['median'] * 1e3:.1f} ms/step "
                f"({row['attention_share_of_step']:.0%} of the step), K/V read by the attention calls: "
                + ", ".join(parts)
            )
        if "speedup_vs_full_fast" in row:
            notes.append(
                f"{row['label']}: {row['speedup_vs_full_fast']:.3f}x the decode speed of full-fast (nothing pruned, every "
                f"layer through the grouped kernel); the "
                f"bandwidth model's ideal against full-fast is {row['ideal_speedup_vs_full_fast']:.3f}x, "
                f"so {row['of_ideal_vs_full_fast']:.2f} of ideal"
            )
    for row in rows:
        report = row.get("report")
        if report is None or row["label"] == "unpruned":
            continue
        checks = (
            f"KV bytes {row['kv_bytes']} = report {report['kv_bytes_after']} "
            f"({'equal' if row['kv_bytes_match_report'] else 'DIFFERENT'}), "
            f"= formula {report['kv_bytes_formula']} ({'equal' if row['kv_bytes_match_formula'] else 'DIFFERENT'})"
        )
        saved = row.get("peak_decode_saved")
        peak = "" if saved is None else f"; peak decode memory {saved / 2**20:+.0f} MiB less than unpruned"
        notes.append(
            f"{row['label']}: vision KV removed {report['vision_kv_reduction']:.1%} "
            f"({report['pruned_layers']} layers pruned), KV saved {row.get('kv_saved_bytes', 0) / 2**20:.0f} MiB{peak}; "
            f"{checks}"
        )
    return notes


def _argv() -> list[str]:
    import sys

    return sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else sys.argv[1:]


def _uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"
