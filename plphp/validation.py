"""Turn pydantic validation errors into one-line `ConfigError`s naming field, value and what is allowed."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from plphp.errors import ConfigError


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


def validation_message(exc: ValidationError, model: type[BaseModel], prefix: str) -> str:
    """One line for the first error of `exc`, with the dotted field path under `prefix`."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    path = ".".join([prefix, *(str(p) for p in loc)]) if prefix else ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{path}: unknown field; allowed fields are {', '.join(allowed) or 'none'}{hint}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    value = error.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict) else ""
    return f"{path}: {message}{shown}"


def validate(model: type[BaseModel], data: Any, prefix: str) -> Any:
    """`model.model_validate(data)`, raising `ConfigError` with a one-line message on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, model, prefix)) from None
