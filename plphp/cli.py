"""The `plphp` command line: `policies`, `run`, `eval`, `export-tasks`, `demo`, `inspect`, `calibrate`, `bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from plphp.errors import ConfigError, PlphpError
from plphp.evaluation.command import eval_command, export_tasks_command
from plphp.options import ArchOption

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Prune the vision-token KV cache of vision-language models (PLPHP and other policies).",
)
console = Console()


@app.command()
def policies(
    name: Annotated[
        str | None, typer.Argument(help="show only components, presets and architectures whose name contains this")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="show one section only: collector, allocator, selector, preset or architecture"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """List the registered components and presets with their parameters, and the model architectures."""
    from plphp.catalog import SECTIONS, catalog, is_empty, tables

    if kind is not None and kind not in SECTIONS:
        console.print(f"[red]error:[/red] --kind {kind!r}: allowed are {', '.join(SECTIONS)}")
        raise typer.Exit(2)
    data = catalog(kind, name)
    if json_out:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for renderable in tables(data):
            console.print(renderable)
    if is_empty(data):  # like grep: nothing found is status 1
        if not json_out:
            what = " ".join(part for part in (kind and f"of kind {kind}", name and f"matches {name!r}") if part)
            console.print(f"nothing registered {what}")
        raise typer.Exit(1)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML or TOML run config")],
    policy: Annotated[
        str | None, typer.Option(help="preset name or policy file, instead of the config's policy section")
    ] = None,
    baseline: Annotated[bool, typer.Option(help="also generate without pruning and show both answers")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the answer and report here")] = None,
) -> None:
    """Generate from a config file (model, inputs, generation, policy) and print the answer and report."""
    from plphp.backends.loading import generate_with_policy, load_model
    from plphp.models import register_processors
    from plphp.policy import load_policy
    from plphp.runconfig import load_run_config

    try:
        if json_out is not None and json_out.is_dir():
            raise ConfigError(f"--json: {str(json_out)!r} is a directory; give a file name such as out.json")
        run_config, _ = load_run_config(config)
        resolved = load_policy(policy if policy is not None else run_config.policy)
        with console.status(f"loading {run_config.model.path}"):
            register_processors()  # so that a directory written by plphp.models.save_tiny loads too
            model, processor = load_model(run_config.model)
        answers = {}
        if baseline:
            answers["unpruned"], _ = generate_with_policy(model, processor, run_config, None)
        answers[resolved.name], report = generate_with_policy(model, processor, run_config, resolved)
    except PlphpError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for name, answer in answers.items():
        console.print(f"[bold]{name}:[/bold] {answer}")
    console.print(report.table())
    if json_out is not None:
        json_out.write_text(json.dumps({"answers": answers, "report": report.to_dict()}, indent=2))


app.command("eval")(eval_command)
app.command("export-tasks")(export_tasks_command)


@app.command()
def demo(
    arch: ArchOption = "grid",
    policy: Annotated[str, typer.Option(help="preset or policy file")] = "plphp",
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 24,
    png: Annotated[Path, typer.Option(help="where to write the kept-patches picture")] = Path("plphp-demo.png"),
    layer: Annotated[int | None, typer.Option(help="layer to picture (default: the most pruned)")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads (a model this small runs fastest on one)")] = 1,
) -> None:
    """Answer synthetic questions with a small model that ships with plphp (no downloads), unpruned and
    pruned; print the report and attention recall; picture the kept patches."""
    import torch

    from plphp.demo import run_demo

    # A second thread mostly waits on a model this small (docs/architecture.md, "Measuring": 28 s against 9 s for
    # this demo on a loaded 2-core machine); the command line sets it, the library never does.
    torch.set_num_threads(threads)
    try:
        run_demo(console, arch=arch, policy=policy, max_new_tokens=max_new_tokens, png=png, layer=layer)
    except PlphpError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _register_inspect() -> None:
    from plphp.inspect.command import inspect_command

    app.command(name="inspect")(inspect_command)


_register_inspect()


def _register_bench() -> None:
    from plphp.bench.cli import bench

    app.command(name="bench")(bench)


_register_bench()


def _register_calibrate() -> None:
    from plphp.calibrate.command import calibrate_command

    app.command(name="calibrate")(calibrate_command)


_register_calibrate()


@app.callback()
def _options(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            metavar="MODULE",
            help="import MODULE and register its plphp hooks (repeatable; may stand anywhere on the line; "
            "PLPHP_PLUGINS=mod1,mod2 does the same)",
        ),
    ] = None,
) -> None:
    """Prune the vision-token KV cache of vision-language models (PLPHP and other policies)."""


def split_plugins(args: list[str]) -> tuple[list[str], list[str]]:
    """`(plugin modules, other arguments)`: every `--plugin MODULE` / `--plugin=MODULE`, wherever it stands."""
    plugins, rest = [], []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--plugin":
            if index + 1 >= len(args):
                raise PlphpError("--plugin: a module name must follow it")
            plugins.append(args[index + 1])
            index += 2
            continue
        if arg.startswith("--plugin="):
            plugins.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        index += 1
    return plugins, rest


def main(args: list[str] | None = None) -> None:
    import sys

    from plphp.registry import load_plugins

    try:
        plugins, rest = split_plugins(list(sys.argv[1:] if args is None else args))
        load_plugins(plugins)
    except PlphpError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
    app(args=rest, prog_name="plphp")
