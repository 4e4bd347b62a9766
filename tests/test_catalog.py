"""`plphp policies`: allowed values in words, derived from the pydantic fields; `--json`; the filter;
tables that keep every name whole at 80 columns and in a pipe."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field
from rich.console import Console

from plphp.catalog import allowed_values, catalog, tables
from plphp.policy import PolicyConfig
from plphp.registry import KINDS, get_registry

HEADERS = ("name", "default", "allowed", "description", "preset", "stage", "config")


def allowed(kind: str, name: str, param: str) -> str:
    return allowed_values(get_registry().component(kind, name).Params.model_fields[param])


def test_the_allowed_values_of_known_fields_read_as_intended():
    assert allowed("collector", "last_token", "window") == "1–4096 or 'question'"
    assert allowed("collector", "snapkv", "pooling") == "'max' | 'avg'"
    assert allowed("collector", "snapkv", "window") == "1–4096"
    assert allowed("allocator", "uniform", "retention") == "0–1"
    assert allowed("allocator", "pyramid_stages", "boundaries") == "1 or more numbers"
    assert allowed("allocator", "withdraw", "after") == "> 0 and ≤ 1"
    assert allowed("selector", "random", "seed") == "≥ 0"
    assert allowed_values(PolicyConfig.model_fields["end_layer"]) == "≥ 1 or none"
    assert allowed_values(PolicyConfig.model_fields["stage"]) == "'decode' | 'prefill' | 'input'"


class Shapes(BaseModel):
    flag: bool = False
    count: int = 3
    share: float = Field(0.5, gt=0.0, lt=1.0)
    step: int = Field(4, ge=2, multiple_of=2)
    label: str = "x"
    mode: Literal["a", "b"] | None = None
    either: Annotated[float, Field(ge=0.5, le=2.5)] | Literal["auto", "off"] = "auto"
    pair: tuple[int, float] = (1, 2.0)
    sizes: list[int] = Field(default_factory=list, max_length=3)
    shares: tuple[Annotated[float, Field(ge=0, le=1)], ...] = Field((0.5,), min_length=1, max_length=4)
    loose: dict[str, int] = Field(default_factory=dict)


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("flag", "true | false"),
        ("count", "integer"),
        ("share", "> 0 and < 1"),
        ("step", "≥ 2, a multiple of 2"),
        ("label", "text"),
        ("mode", "'a' | 'b' or none"),
        ("either", "0.5–2.5 or 'auto' | 'off'"),
        ("pair", "(integer, number)"),
        ("sizes", "up to 3 integers"),
        ("shares", "1–4 values, each 0–1"),
        ("loose", "mapping"),
    ],
)
def test_allowed_values_come_from_the_type_and_the_constraints_alone(field, words):
    assert allowed_values(Shapes.model_fields[field]) == words


def test_the_catalog_has_every_component_with_its_parameters_presets_and_architectures():
    registry = get_registry()
    data = catalog()
    assert set(data) == {"components", "presets", "architectures"}
    for kind in KINDS:
        assert set(data["components"][kind]) == set(registry.components(kind))
    window = data["components"]["collector"]["last_token"]["params"]["window"]
    assert window["default"] == 1 and window["required"] is False
    assert window["allowed"] == "1–4096 or 'question'" and "observation window" in window["description"]
    assert window["schema"]["anyOf"][0] == {"maximum": 4096, "minimum": 1, "type": "integer"}
    boundaries = data["components"]["allocator"]["pyramid_stages"]["params"]["boundaries"]
    assert boundaries["default"] == [0.25, 0.5, 0.75]
    assert data["components"]["selector"]["shared_topk"]["params"] == {}
    assert set(data["presets"]) == set(registry.presets())
    assert data["presets"]["fastv"]["stage"] == "prefill" and data["presets"]["fastv"]["reference"]
    assert data["presets"]["plphp"]["config"]["allocator"]["name"] == "vision_tiers"
    assert data["architectures"] == registry.architectures()
    json.dumps(data)  # JSON all through


def test_the_filter_keeps_one_kind_or_the_names_that_contain_a_substring():
    data = catalog(kind="selector")
    assert set(data["components"]["selector"]) == set(get_registry().components("selector"))
    assert not data["components"]["collector"] and not data["presets"] and not data["architectures"]
    data = catalog(name="SNAP")
    assert list(data["components"]["collector"]) == ["snapkv"] and list(data["presets"]) == ["snapkv"]
    assert not data["architectures"]
    data = catalog(kind="architecture", name="qwen")
    assert data["architectures"] and all("qwen" in a.lower() for a in data["architectures"])


def render(width: int, **filters) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    for renderable in tables(catalog(**filters)):
        console.print(renderable)
    return console.file.getvalue()


def _check_whole(out: str, width: int) -> None:
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= width
    registry = get_registry()
    names = [name for kind in KINDS for name in registry.components(kind)]
    for name in [*names, *registry.presets()]:
        assert re.search(rf"(^|[│\s]){re.escape(name)}([│\s]|$)", out, re.M), name
    for kind in KINDS:
        for name, cls in registry.components(kind).items():
            for param in cls.Params.model_fields:
                assert re.search(rf"^│\s+{param}\s+│", out, re.M) or f"  {param}" in out, (name, param)
    for architecture in registry.architectures():
        assert architecture in out


@pytest.mark.parametrize("width", [80, 100, 60])
def test_the_tables_keep_every_name_and_header_whole(width):
    out = render(width)
    _check_whole(out, width)
    if width >= 80:
        for header in HEADERS:
            assert f"┃ {header} " in out, header
        assert "1–4096 or" in out and "'max' | 'avg'" in out


def _cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    env = {"COLUMNS": str(columns), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "plphp", "policies", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_the_command_at_80_columns_in_a_pipe():
    result = _cli()
    assert result.returncode == 0, result.stderr
    _check_whole(result.stdout, 80)
    for header in HEADERS:
        assert f"┃ {header} " in result.stdout, header


def test_the_command_prints_json_and_filters():
    result = _cli("--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["components"]["collector"]["snapkv"]["params"]["pooling"]["allowed"] == "'max' | 'avg'"
    assert data["components"]["allocator"]["uniform"]["params"]["retention"]["default"] == 0.5
    result = _cli("--json", "--kind", "selector")
    data = json.loads(result.stdout)
    assert data["components"]["selector"] and not data["components"]["collector"] and not data["presets"]
    result = _cli("topk", "--kind", "selector")
    assert result.returncode == 0
    assert "head_topk" in result.stdout and "adaptive_topk" in result.stdout and "snapkv" not in result.stdout
    assert "random" not in result.stdout and "presets" not in result.stdout
    result = _cli("no-such-thing")
    assert result.returncode == 1 and "nothing registered matches 'no-such-thing'" in result.stdout
    result = _cli("--kind", "selectors")
    message = " ".join(result.stdout.split())
    assert (
        result.returncode == 2 and "allowed are collector, allocator, selector, merger, preset, architecture" in message
    )
