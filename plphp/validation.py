"""Turn pydantic validation errors into one-line `ConfigError`s naming field, value and what is allowed.

`StrictNumbers` is the base of every validated section (component `Params`, `PolicyConfig`, the run
config): a field that expects a number refuses a bool (`retention: true` is not 1.0) and a string,
and a float field refuses NaN and infinity. An int is still a float (`retention: 1`).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from plphp.errors import ConfigError

#: Longest value shown in a message; longer ones are cut with "...".
SHOWN = 80


def shown(value: Any) -> str:
    """`repr(value)` on one line, cut to `SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def _members(annotation: Any) -> list[Any]:
    """The types a field accepts: unions flattened, `Annotated` unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _is_number_type(member: Any) -> bool:
    return isinstance(member, type) and issubclass(member, (int, float)) and not issubclass(member, bool)


def _takes(members: list[Any], value: Any) -> bool:
    """Whether the field means to accept `value` (a bool or a string) as it is."""
    for member in members:
        if member is Any or (isinstance(member, type) and isinstance(value, member) and not _is_number_type(member)):
            return True
        if get_origin(member) is Literal and any(
            v is value or (type(v) is type(value) and v == value) for v in get_args(member)
        ):
            return True
    return False


def _literals(members: list[Any]) -> list[str]:
    return [repr(v) for m in members if get_origin(m) is Literal for v in get_args(m)]


def _element_types(members: list[Any], index: int) -> list[Any]:
    """The annotations an item at `index` of a list/tuple value may have."""
    out = []
    for member in members:
        origin = get_origin(member)
        if not (isinstance(origin, type) and issubclass(origin, (Sequence, set, frozenset))) or origin is str:
            continue
        args = [a for a in get_args(member) if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in get_args(member):
            out.extend(_members(args[index]) if index < len(args) else [])
        else:
            out.extend(_members(args[0]) if args else [Any])
    return out


def number_problem(annotation: Any, value: Any, allowed: str = "a number") -> str | None:
    """Why `value` cannot stand for the number(s) `annotation` expects, or None.

    `allowed` describes the number in the message ("a number >= 0, <= 1").
    """
    members = _members(annotation)
    numeric = any(_is_number_type(m) for m in members)
    allowed = " or ".join([allowed, *_literals(members)])
    for kind, word in ((bool, "a bool"), (str, "a string")):
        if isinstance(value, kind):
            return f"expected {allowed}, not {word}" if numeric and not _takes(members, value) else None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            inner = _element_types(members, index)
            problem = number_problem(Union[tuple(inner)], item) if inner else None  # noqa: UP007
            if problem:
                return f"item {index}: {problem}"
    return None


def _bounds(metadata: Sequence[Any]) -> str:
    """ " >= 0, <= 1" from a field's annotated-types constraints."""
    out = []
    for item in metadata:
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attribute, None)
            if bound is not None:
                out.append(f"{symbol} {bound}")
    return f" {', '.join(out)}" if out else ""


class StrictNumbers(BaseModel):
    """Base model whose numeric fields take numbers only (no bools, no strings, no NaN or infinity)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        problem = number_problem(field.annotation, value, "a number" + _bounds(field.metadata))
        if problem:
            raise PydanticCustomError("strict_number", problem)
        return value


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that holds the last element of `loc`."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
        else:
            return []
    return list(getattr(current, "model_fields", {}))


def _part(part: Any) -> str:
    """One element of a field path: a plain name as is, anything else as its (short) repr."""
    if isinstance(part, int) or (isinstance(part, str) and part.isprintable() and part.strip() == part and part):
        return str(part)
    return shown(part)


def dotted(prefix: str, loc: Sequence[Any]) -> str:
    """`prefix.a.b` for the path `loc` under `prefix` (which may be empty)."""
    return ".".join([*([prefix] if prefix else []), *(_part(p) for p in loc)])


def _names_value(message: str, value: Any) -> bool:
    """Whether a validator's own message already quotes the value (so it is not shown twice)."""
    return "got " in message or repr(value) in message


def validation_message(exc: ValidationError, model: type[BaseModel], prefix: str) -> str:
    """One line for the first error of `exc`, with the dotted field path under `prefix`."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    path = dotted(prefix, loc)
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = f"allowed fields are {', '.join(allowed)}" if allowed else "no fields are allowed here"
        return f"{path}: unknown field; {listing}{hint}"
    message = " ".join(str(error["msg"]).split())
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    value = error.get("input")
    custom = error["type"] in ("value_error", "assertion_error")
    hidden = isinstance(value, dict) or (custom and _names_value(message, value))
    return f"{path}: {message}" + ("" if hidden else f" (got {shown(value)})")


def validate(model: type[BaseModel], data: Any, prefix: str) -> Any:
    """`model.model_validate(data)`, raising `ConfigError` with a one-line message on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, model, prefix)) from None
