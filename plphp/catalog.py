"""What the registry holds, for `plphp policies`: as data (`--json`) and as tables.

The allowed values of a parameter are written for people ("1–4096 or 'question'", "'max' | 'avg'",
"≥ 1 or none", "0–1") and derived from the pydantic field alone: its type (`Literal`, unions,
`Optional`, `Annotated`, tuples and lists, `bool`, numbers) and its constraints (`ge`, `gt`, `le`,
`lt`, `min_length`, `max_length`, `multiple_of`), so a plugin's components read like the built-ins.
"""

from __future__ import annotations

import enum
import json
import types
from collections import abc
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from plphp.registry import KINDS, get_registry

#: What `--kind` takes: a component kind, or one of the other sections.
SECTIONS = (*KINDS, "preset", "architecture")

_CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "multiple_of")
_PLURAL = {"integer": "integers", "number": "numbers", "text": "texts", "true | false": "true | false values"}


def allowed_values(field: FieldInfo) -> str:
    """What a field accepts, in words: "1–4096 or 'question'", "'max' | 'avg'", "≥ 1 or none", "0–1"."""
    return _describe(field.annotation, _constraints(field.metadata))


def _constraints(items: Sequence[Any]) -> dict[str, Any]:
    """The bounds and lengths among pydantic / annotated-types metadata (a nested `Field(...)` included)."""
    found: dict[str, Any] = {}
    for item in items:
        if isinstance(item, FieldInfo):
            found.update(_constraints(item.metadata))
            continue
        for name in _CONSTRAINTS:
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    return found


def _describe(annotation: Any, constraints: Mapping[str, Any]) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        return _describe(base, {**constraints, **_constraints(metadata)})
    if origin in (Union, types.UnionType):
        return _union(get_args(annotation), constraints)
    if origin is Literal:
        return " | ".join(_value(v) for v in get_args(annotation))
    if annotation is type(None):
        return "none"
    if annotation is bool:
        return "true | false"
    if annotation in (int, float):
        return _bounds(constraints) or ("integer" if annotation is int else "number")
    if annotation is str:
        return _joined("text", _length(constraints, "characters"))
    if origin in (tuple, list, set, frozenset) or (origin is not None and _is_sequence(origin)):
        return _sequence(annotation, constraints)
    if origin is dict or annotation is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(_value(member.value) for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"{annotation.__name__} ({', '.join(annotation.model_fields)})"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _union(args: Sequence[Any], constraints: Mapping[str, Any]) -> str:
    """Members joined by "or"; literal values gathered into one "'a' | 'b'"; None last, as "none"."""
    parts: list[str] = []
    literals: list[Any] = []
    for arg in args:
        if arg is type(None):
            continue
        if get_origin(arg) is Literal:
            if not literals:
                parts.append("")  # where the literals go
            literals.extend(get_args(arg))
            continue
        parts.append(_describe(arg, constraints))
    parts = [part or " | ".join(_value(v) for v in literals) for part in parts]
    if type(None) in args:
        parts.append("none")
    return " or ".join(parts)


def _sequence(annotation: Any, constraints: Mapping[str, Any]) -> str:
    args = get_args(annotation)
    if get_origin(annotation) is tuple and args and args[-1] is not Ellipsis:
        return "(" + ", ".join(_describe(a, {}) for a in args) + ")"  # a fixed-length tuple
    element = _describe(args[0], {}) if args else "value"
    plural = _PLURAL.get(element)
    noun = plural or "values"
    count = _length(constraints, noun) or f"list of {noun}"
    return count if plural else f"{count}, each {element}"


def _is_sequence(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, (abc.Sequence, abc.Set)) and origin is not str


def _length(constraints: Mapping[str, Any], noun: str) -> str:
    low, high = constraints.get("min_length"), constraints.get("max_length")
    if low is not None and high is not None:
        return f"{low} {noun}" if low == high else f"{low}–{high} {noun}"
    if low is not None:
        return f"{low} or more {noun}"
    if high is not None:
        return f"up to {high} {noun}"
    return ""


def _bounds(constraints: Mapping[str, Any]) -> str:
    lower = next(((sign, constraints[key]) for key, sign in (("ge", "≥"), ("gt", ">")) if key in constraints), None)
    upper = next(((sign, constraints[key]) for key, sign in (("le", "≤"), ("lt", "<")) if key in constraints), None)
    if lower and upper and lower[0] == "≥" and upper[0] == "≤":
        text = f"{_number(lower[1])}–{_number(upper[1])}"
    else:
        text = " and ".join(f"{bound[0]} {_number(bound[1])}" for bound in (lower, upper) if bound)
    if "multiple_of" in constraints:
        text = _joined(text, f"a multiple of {_number(constraints['multiple_of'])}")
    return text


def _joined(*parts: str) -> str:
    return ", ".join(part for part in parts if part)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return repr(value)


# -- the catalog as data ----------------------------------------------------------------------------------------


def describe_field(field: FieldInfo) -> dict[str, Any]:
    """One parameter: default (JSON; None when required), required, allowed (words), description."""
    required = field.is_required()
    default = None if required else field.get_default(call_default_factory=True)
    return {
        "default": None if default is PydanticUndefined else to_jsonable_python(default, fallback=repr),
        "required": required,
        "allowed": allowed_values(field),
        "description": field.description or "",
    }


def _schema(params: type[BaseModel]) -> dict[str, Any]:
    try:
        return params.model_json_schema().get("properties", {})
    except Exception:  # a plugin's exotic type: the words above still describe it
        return {}


def catalog(kind: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Components per kind (with their parameters), presets (with their configs) and architectures.

    Args:
        kind: one of `SECTIONS` to keep that section only.
        name: keep the entries whose name contains this (case-insensitive).

    Every key is always there; a section that `kind` leaves out is empty.
    """
    registry = get_registry()

    def wanted(section: str, entry: str) -> bool:
        return kind in (None, section) and (name is None or name.lower() in entry.lower())

    components: dict[str, dict[str, Any]] = {}
    for section in KINDS:
        components[section] = {}
        for entry, cls in sorted(registry.components(section).items()):
            if not wanted(section, entry):
                continue
            schema = _schema(cls.Params)
            params = {}
            for param, field in cls.Params.model_fields.items():
                params[param] = {**describe_field(field), "schema": schema.get(param, {})}
            components[section][entry] = {"summary": cls.summary(), "params": params}
    presets = {
        entry: {
            "stage": str(preset.config.get("stage", "decode")),
            "description": preset.description,
            "reference": preset.reference,
            "config": to_jsonable_python(dict(preset.config), fallback=repr),
        }
        for entry, preset in sorted(registry.presets().items())
        if wanted("preset", entry)
    }
    architectures = [entry for entry in registry.architectures() if wanted("architecture", entry)]
    return {"components": components, "presets": presets, "architectures": architectures}


def is_empty(data: Mapping[str, Any]) -> bool:
    return not (any(data["components"].values()) or data["presets"] or data["architectures"])


# -- the catalog as tables -----------------------------------------------------------------------------------------


def _default_cell(param: Mapping[str, Any]) -> str:
    if param["required"]:
        return "required"
    default = param["default"]
    return repr(tuple(default)) if isinstance(default, list) else _value(default)


def tables(data: Mapping[str, Any]) -> list[Any]:
    """Rich renderables of `catalog()`: a table per component kind, the presets, the architectures."""
    from plphp.tables import FitTable

    out: list[Any] = []
    for section, entries in data["components"].items():
        if not entries:
            continue
        table = FitTable(title=f"{section}s", title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("default", min_width=7)
        table.add_column("allowed", min_width=13)
        table.add_column("description", min_width=16)
        for entry, component in entries.items():
            table.add_row(f"[bold]{entry}[/bold]", "", "", component["summary"], end_section=not component["params"])
            items = list(component["params"].items())
            for index, (param, values) in enumerate(items):
                table.add_row(
                    f"  {param}",
                    _default_cell(values),
                    values["allowed"],
                    values["description"],
                    end_section=index == len(items) - 1,
                )
        out.append(table)
    if data["presets"]:
        table = FitTable(title="presets", title_justify="left", show_lines=True)
        table.add_column("preset", no_wrap=True)
        table.add_column("stage")
        table.add_column("description", min_width=16)
        table.add_column("config", min_width=16)
        for entry, preset in data["presets"].items():
            description = preset["description"]
            if preset["reference"]:
                description += f" [dim]({preset['reference']})[/dim]"
            config = {k: v for k, v in preset["config"].items() if k != "stage"}
            table.add_row(entry, preset["stage"], description, json.dumps(config))
        out.append(table)
    if data["architectures"]:
        out.append(f"[bold]model architectures:[/bold] {', '.join(data['architectures'])}")
    return out
