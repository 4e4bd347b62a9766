"""The `plphp calibrate` command (registered by `plphp.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from plphp.errors import PlphpError
from plphp.options import ArchOption, DatasetOption, DeviceOption, DtypeOption, ModelOption, SeedOption, TaskOption

console = Console()

HELP = """Fit PLPHP's tiers (vision_tiers: α, β, r, Δr) to a model from a small calibration set; write a policy.

Rules. α and β: at the upper and lower tertiles (--quantiles) of the per-layer mean γ over the
pruned layers, measured by a prefill under the base policy, so the tiers split the pruned layers
into thirds. r: bisected so that the mean over items of the vision-KV kept share (the reports'
vision_kept_fraction, every layer counted, unpruned ones too) is nearest the target; Δr keeps the
base's Δr / r (--delta-rule proportional) or its Δr (fixed). --maximize recall searches the
observation window (1, question, 4, 16), Δr / r (0, 1/3, 2/3) and three quantile pairs, r
re-solved for each, for the highest attention recall (no labels needed). Writes OUT (the policy),
STEM-base.yaml beside it (the base policy re-solved to the same budget) and STEM.json (the report).
"""


def calibrate_command(
    model: ModelOption = None,
    arch: ArchOption = "grid",
    dataset: DatasetOption = None,
    num_items: Annotated[int, typer.Option(min=1, help="built-in tasks: how many")] = 32,
    seed: SeedOption = 0,
    task: TaskOption = None,
    policy: Annotated[str, typer.Option("--policy", "-p", help="base policy (preset or file) using vision_tiers")] = (
        "plphp"
    ),
    target_retention: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="mean share of vision KV to keep (default: the base policy's own)"),
    ] = None,
    target_removed: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="mean share of vision KV to remove (instead)")
    ] = None,
    maximize: Annotated[
        str | None, typer.Option(help="'recall': search for the highest attention recall at the target")
    ] = None,
    delta_rule: Annotated[
        str, typer.Option(help="how Δr follows r: proportional (keep Δr / r) or fixed (keep Δr)")
    ] = "proportional",
    quantiles: Annotated[tuple[float, float], typer.Option(help="quantiles of the per-layer mean γ for β and α")] = (
        1 / 3,
        2 / 3,
    ),
    out: Annotated[Path, typer.Option(help="the policy YAML to write (report: same stem, .json)")] = Path(
        "calibrated.yaml"
    ),
    name: Annotated[str, typer.Option(help="the calibrated policy's name:")] = "calibrated",
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    recall_tokens: Annotated[int, typer.Option(min=2, help="decoding steps of the unpruned recall pass")] = 8,
    recall: Annotated[bool, typer.Option(help="measure attention recall (always on with --maximize recall)")] = True,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from plphp.calibrate.core import calibrate
    from plphp.calibrate.output import tables, write_calibration
    from plphp.calibrate.solve import CalibrationError, check_base
    from plphp.evaluation.command import _check_device_and_dtype, _load
    from plphp.evaluation.dataset import builtin_items, load_jsonl
    from plphp.policy import load_policy

    try:
        if target_retention is not None and target_removed is not None:
            raise CalibrationError("--target-retention and --target-removed exclude each other; give one")
        if maximize not in (None, "recall"):
            raise CalibrationError(f"--maximize: {maximize!r} is not supported; the one choice is 'recall'")
        if delta_rule not in ("proportional", "fixed"):
            raise CalibrationError(f"--delta-rule: {delta_rule!r}; use proportional or fixed")
        if out.suffix.lower() not in (".yaml", ".yml") or out.is_dir():
            raise CalibrationError(f"--out: {str(out)!r} must be a file name ending in .yaml or .yml")
        check_base(load_policy(policy))  # a non-tiered policy costs no model loading
        _check_device_and_dtype(model or arch, device, dtype)
        items = load_jsonl(dataset) if dataset is not None else builtin_items(num_items, seed=seed, kinds=task)
        with console.status(f"loading {model or 'the ' + arch + ' model'}"):
            loaded, processor, model_name = _load(model, arch, device, dtype)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done)

            result = calibrate(
                loaded,
                processor,
                items,
                policy,
                target_retention=target_retention,
                target_removed=target_removed,
                maximize=maximize,
                delta_rule=delta_rule,
                quantiles=tuple(quantiles),
                batch_size=batch_size,
                recall=recall,
                recall_tokens=recall_tokens,
                name=name,
                progress=progress,
            )
        result.settings["model"] = model_name
        result.settings["dataset"] = str(dataset.resolve()) if dataset else f"built-in tasks (seed {seed})"
        paths = write_calibration(result, out)
    except (PlphpError, ValueError) as exc:  # ValueError: bad task kinds and the like
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for table in tables(result):
        console.print(table)
    console.print(f"wrote {paths[0]} (load it with plphp.load_policy or --policy), {paths[1]} and {paths[2]}")


calibrate_command.__doc__ = HELP
