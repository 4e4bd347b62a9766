"""The `plphp eval` command (registered by `plphp.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from plphp.errors import PlphpError
from plphp.options import (
    ArchOption,
    DatasetOption,
    DeviceOption,
    DtypeOption,
    LayoutOption,
    ModelOption,
    SeedOption,
    TaskOption,
)

if TYPE_CHECKING:
    from plphp.evaluation.parallel import Shard

console = Console()


def eval_command(
    model: ModelOption = None,
    dataset: DatasetOption = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", "-p", help="preset or policy file, repeatable; default: full, plphp, random (+ fastv)"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="output folder: items.jsonl, results.json, eval.png")] = Path("eval-out"),
    num_items: Annotated[int, typer.Option(min=1, help="built-in tasks: how many")] = 20,
    seed: SeedOption = 0,
    task: TaskOption = None,
    layout: LayoutOption = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="upper bound; a batch stops at its longest answer")] = 32,
    recall: Annotated[bool, typer.Option(help="measure attention recall (one more unpruned pass)")] = True,
    arch: ArchOption = "grid",
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    overwrite: Annotated[bool, typer.Option(help="discard results already in --out instead of resuming")] = False,
) -> None:
    """Evaluate several policies side by side: accuracy, KV bytes, decode time, attention recall.

    Results are appended to OUT/items.jsonl as batches finish; rerunning the same command resumes.
    Under `torchrun` or `accelerate launch` the processes share the batches and rank 0 writes the results.
    """
    from plphp.evaluation.dataset import builtin_items, load_jsonl, resolve_layout
    from plphp.evaluation.parallel import Shard
    from plphp.evaluation.run import evaluate
    from plphp.evaluation.runner import EvalSettings
    from plphp.policy import load_policy

    try:
        shard = Shard.from_environment()
        device = _device_of(shard, device)
        _check_device_and_dtype(
            model or arch, device, dtype
        )  # also with a built-in model: no option is ignored unchecked
        if dataset is not None:
            items = load_jsonl(dataset)
            dataset_name = str(dataset.resolve())
        else:
            layout = resolve_layout(layout, model or arch)
            items = builtin_items(num_items, seed=seed, kinds=task, layout=layout)
            dataset_name = f"built-in tasks (seed {seed}, {num_items} items, kinds {task or 'all'}, {layout} layout)"
        for spec in policy or []:  # a typo in a policy name costs no model loading
            load_policy(spec)
        with console.status(f"loading {model or 'the ' + arch + ' model'}"):
            loaded, processor, model_name = _load(model, arch, device, dtype)
        settings = EvalSettings(batch_size=batch_size, max_new_tokens=max_new_tokens, recall=recall)
        evaluate(
            loaded,
            processor,
            items,
            policies=policy or None,
            out_dir=out,
            settings=settings,
            run_info={"model": model_name, "dataset": dataset_name},
            console=console,
            overwrite=overwrite,
            shard=shard,
        )
    except PlphpError as exc:
        console.print(f"[red]error:[/red] {exc}")
        if (out / "items.jsonl").is_file():
            console.print(f"results finished so far are kept in {out / 'items.jsonl'}; rerun to continue")
        raise typer.Exit(2) from None
    except ValueError as exc:  # bad task kinds and the like
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _device_of(shard: Shard, device: str) -> str:
    """`auto` for one of several processes on a GPU machine: the GPU of its local rank."""
    if device != "auto" or shard.world_size == 1:
        return device
    import torch

    return f"cuda:{shard.local_rank}" if torch.cuda.is_available() else "cpu"


def _check_device_and_dtype(path: str, device: str, dtype: str) -> None:
    from plphp.backends.loading import resolve_device
    from plphp.runconfig import ModelSection
    from plphp.validation import validate

    resolve_device(validate(ModelSection, {"path": path, "device": device, "dtype": dtype}, "model").device)


def _load(path: str | None, arch: str, device: str, dtype: str):
    if path is None:
        import torch

        from plphp.models.builtin import GRID, GRID_V2, load_builtin_model

        torch.set_num_threads(1)  # a tiny model runs fastest on one thread (docs/architecture.md, "Measuring")
        model, processor, _ = load_builtin_model(arch)
        trained = {GRID: "grid model (plphp, trained)", GRID_V2: "grid model v2 (plphp, trained)"}
        name = trained.get(arch, f"tiny {arch} (random weights, seed 0, 12 layers)")
        return model, processor, name
    from plphp.backends.loading import load_model
    from plphp.models import register_processors
    from plphp.runconfig import ModelSection
    from plphp.validation import validate

    section = validate(ModelSection, {"path": path, "device": device, "dtype": dtype}, "model")
    register_processors()  # so that a directory written by plphp.models.save_tiny loads too
    model, processor = load_model(section)
    return model, processor, path


def export_tasks_command(
    out: Annotated[Path, typer.Argument(help="folder to write: test.jsonl, images/, plphp_grid.yaml, utils.py")],
    num_items: Annotated[int, typer.Option(min=1, help="how many items")] = 40,
    seed: SeedOption = 0,
    task: TaskOption = None,
    layout: LayoutOption = "cell",
) -> None:
    """Write the built-in grid tasks to local files: a JSONL dataset with PNG pictures for `plphp eval
    --dataset`, and the lmms-eval task `plphp_grid` around it (`--include_path OUT`)."""
    from plphp.evaluation.dataset import builtin_items, resolve_layout
    from plphp.evaluation.export import TASK_NAME, export_tasks

    try:
        items = builtin_items(num_items, seed=seed, kinds=task, layout=resolve_layout(layout, "grid"))
        data = export_tasks(items, out)
    except (PlphpError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"wrote {num_items} items to {data} (pictures in {out / 'images'})")
    console.print(f"plphp eval:  plphp eval --dataset {data}")
    console.print(f"lmms-eval:   python -m lmms_eval --model plphp --tasks {TASK_NAME} --include_path {out}")
