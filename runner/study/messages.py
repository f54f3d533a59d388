"""Validation problems in the user's words: one line naming the key, what was expected and what was given.

Shared by the study parser and the plan's per-cell checks, so a mistake reads the same
wherever it is found.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from runner.errors import SpecError, choices


def show_value(value: Any) -> str:
    """A value as the user wrote it in TOML: strings quoted, booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # escaped as TOML writes them: a line break stays "\n", on one line
        return json.dumps(value, ensure_ascii=False) if any(ord(c) < 32 for c in value) else f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return str(value)


_EXPECTED = {
    "int_type": "expected an integer", "int_from_float": "expected an integer",
    "float_type": "expected a number", "bool_type": "expected true or false",
    "string_type": "expected a string", "list_type": "expected a list", "dict_type": "expected a table",
    "model_type": "expected a table",
}


def pydantic_problem(err: dict, model: type[BaseModel] | None = None) -> tuple[str, str]:
    """Turn the first pydantic error into ``(key, message)`` in the user's words."""
    loc = ".".join(str(p) for p in err["loc"])
    kind, got, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind in _EXPECTED:
        return loc, f"{_EXPECTED[kind]}, got {show_value(got)}"
    if kind == "extra_forbidden":
        return loc, f"unknown key; valid keys: {choices(_fields_at(model, err['loc'][:-1]))}"
    if kind == "literal_error":
        return loc, f"expected one of {ctx.get('expected', '').replace(chr(39), chr(34))}, got {show_value(got)}"
    if kind == "missing":
        return loc, "required key is missing"
    if kind == "value_error":  # our validators' own words; a model validator's start with "key: "
        text = str(ctx.get("error", err["msg"]))
        if loc:
            return loc, text
        key, sep, rest = text.partition(": ")
        return (key, rest) if sep else ("", text)
    if kind == "too_short":
        return loc, "must not be empty"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return loc, f"must be {bounds[kind]} {limit}, got {show_value(got)}"
    return loc, f"{err['msg'].lower()}, got {show_value(got)}"


def _fields_at(model: type[BaseModel] | None, path: tuple) -> list[str]:
    """The keys valid where an unknown key was found: a nested table's own (``[study.wandb]``)."""
    for part in path:
        field = model.model_fields.get(part) if model is not None else None
        inner = field and next((a for a in getattr(field.annotation, "__args__", (field.annotation,))
                                if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if inner is None:
            return []
        model = inner
    return list(model.model_fields) if model is not None else []


def validate(model: type[BaseModel], data: Any, file: str, where: str) -> BaseModel:
    """Validate ``data`` against ``model``; the first problem becomes a one-line SpecError."""
    if not isinstance(data, dict):
        raise SpecError(file, where, f"expected a table, got {show_value(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        key, message = pydantic_problem(e.errors()[0], model)
        raise SpecError(file, where, f"{key}: {message}" if key else message) from None


NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_name(name: str, file: str, where: str, key: str = "name") -> None:
    """A name the study gives a matrix, table, figure, probe or tune block: it becomes a file or
    folder name (``results/report/<table>.md``), so no path separators and no leading dot."""
    if not NAME_RE.fullmatch(name):
        raise SpecError(file, where, f"{key}: {show_value(name)} is not a valid name; use letters, digits, "
                                     "'_', '-' and '.' (not first)")
