"""The `plphp inspect` command (registered by `plphp.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from plphp.errors import ConfigError, PlphpError
from plphp.options import (
    ArchOption,
    DatasetOption,
    DeviceOption,
    DtypeOption,
    LayoutOption,
    ModelOption,
    SeedOption,
)

console = Console()


def inspect_command(
    model: ModelOption = None,
    arch: ArchOption = "grid",
    image: Annotated[
        list[Path] | None, typer.Option("--image", help="one input: an image file, repeatable (with --prompt)")
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="one input: the question about the --image files")] = None,
    dataset: DatasetOption = None,
    num_items: Annotated[
        int | None, typer.Option(min=1, help="how many built-in tasks (default 4) or --dataset rows (default all)")
    ] = None,
    seed: SeedOption = 0,
    layout: LayoutOption = "auto",
    policy: Annotated[
        list[str] | None, typer.Option("--policy", "-p", help="preset or policy file, repeatable; default: plphp")
    ] = None,
    layer: Annotated[
        list[int] | None,
        typer.Option(
            "--layer", help="layer of the kept-patch and head × head figures, repeatable; default: most pruned"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="output folder: PNGs, inspect.json, index.html")] = Path("inspect-out"),
    recall_tokens: Annotated[
        int, typer.Option(min=0, help="unpruned decoding steps for attention recall (0: no recall)")
    ] = 8,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
) -> None:
    """Figures of what a policy does inside a model: vision attention and tiers per layer, retention, the
    patches each KV head keeps, attention recall per layer and head, and how much the heads' keep-sets overlap."""
    from plphp.evaluation.command import _check_device_and_dtype, _load
    from plphp.inspect.run import InspectSettings, check_layers, load_policies, run_inspect

    try:
        _check_device_and_dtype(model or arch, device, dtype)
        items, dataset_name = _items(image, prompt, dataset, num_items, seed, (layout, model or arch))
        load_policies(policy)  # a typo in a policy name costs no model loading
        with console.status(f"loading {model or 'the ' + arch + ' model'}"):
            loaded, processor, model_name = _load(model, arch, device, dtype)
        from plphp.registry import get_registry

        check_layers(layer, get_registry().adapter_for(loaded).num_layers, model_name)
        data = run_inspect(
            loaded,
            processor,
            items,
            policy,
            out,
            settings=InspectSettings(layers=layer, recall_tokens=recall_tokens),
            run_info={"model": model_name, "dataset": dataset_name},
            console=console,
        )
    except (PlphpError, ValueError) as exc:  # ValueError: bad task kinds and the like
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"wrote {len(data['figures'])} figures, inspect.json and index.html to {out}")


def _items(image, prompt, dataset, num_items, seed, layout_of):
    from plphp.evaluation.dataset import EvalItem, builtin_items, load_jsonl, resolve_layout
    from plphp.runconfig import image_problem

    if image or prompt is not None:
        if dataset is not None:
            raise ConfigError("--image / --prompt and --dataset: give one input or a dataset, not both")
        if not image:
            raise ConfigError("--prompt: give the picture(s) it asks about with --image")
        if prompt is None or not prompt.strip():
            raise ConfigError("--image: give the question about it with --prompt")
        for path in image:
            if path.is_dir():
                raise ConfigError(f"--image: {str(path)!r} is a directory, not an image file")
            if not path.is_file():
                raise ConfigError(f"--image: file {str(path)!r} not found")
            problem = image_problem(path)
            if problem:
                raise ConfigError(f"--image: {str(path)!r} is not a readable image: {problem}")

        def load():
            from PIL import Image

            pictures = []
            for path in image:
                with Image.open(path) as picture:
                    pictures.append(picture.convert("RGB"))
            return pictures

        item = EvalItem("input", prompt, "", where="--image/--prompt", load_images=load, num_images=len(image))
        return [item], "one input: " + ", ".join(str(p) for p in image)
    if dataset is not None:
        rows = load_jsonl(dataset)
        return rows[:num_items] if num_items else rows, str(dataset.resolve())
    count = num_items or 4
    layout = resolve_layout(*layout_of)
    items = builtin_items(count, seed=seed, layout=layout)
    return items, f"built-in tasks (seed {seed}, {count} items, {layout} layout)"
