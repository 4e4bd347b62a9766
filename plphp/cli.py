"""The `plphp` command line: `policies`, `run`, `eval`, `demo`, `bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from plphp.errors import ConfigError, PlphpError
from plphp.evaluation.command import eval_command
from plphp.options import ArchOption

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Prune the vision-token KV cache of vision-language models (PLPHP and other policies).",
)
console = Console()


def _describe_field(field: Any) -> tuple[str, str]:
    """(default, allowed) of a pydantic field, for the tables."""
    default = "required" if field.is_required() else repr(field.default)
    bounds = []
    for item in field.metadata:
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    annotation = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
    return default, f"{annotation} {', '.join(bounds)}".strip()


@app.command()
def policies() -> None:
    """List the registered components and presets with their parameters."""
    from plphp.registry import KINDS, get_registry

    registry = get_registry()
    table = Table(title="components", show_lines=True)
    for column in ("kind", "name", "what it does", "parameter", "default", "allowed", "meaning"):
        table.add_column(column)
    for kind in KINDS:
        for name, cls in sorted(registry.components(kind).items()):
            fields = list(cls.Params.model_fields.items()) or [("", None)]
            for index, (param, field) in enumerate(fields):
                default, allowed = _describe_field(field) if field is not None else ("", "")
                head = (kind, name, cls.summary()) if index == 0 else ("", "", "")
                table.add_row(*head, param, default, allowed, (field.description or "") if field else "")
    console.print(table)
    presets = Table(title="presets", show_lines=True)
    for column in ("preset", "stage", "description", "config"):
        presets.add_column(column)
    for name, preset in sorted(registry.presets().items()):
        description = preset.description + (f" [dim]({preset.reference})[/dim]" if preset.reference else "")
        config = {k: v for k, v in preset.config.items() if k != "stage"}
        presets.add_row(name, str(preset.config.get("stage", "decode")), description, json.dumps(config))
    console.print(presets)
    adapters = ", ".join(registry.architectures())
    console.print(f"[bold]model architectures:[/bold] {adapters}")


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


def _register_bench() -> None:
    from plphp.bench.cli import bench

    app.command(name="bench")(bench)


_register_bench()


def main() -> None:
    app()
