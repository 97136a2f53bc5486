"""Check rows and constitutions against the JSON schemas shipped in ``charter/schemas/``.

The schemas are the published contract for charter's files. Every stage checks its rows here right
before writing, so nothing invalid is ever published, and errors name the row and the field
(``chosen[0].role``) rather than dumping a validator's internals.

The schemas use one keyword of our own, ``x-lastRole`` (the role the last message of a chat must
have), because plain JSON Schema cannot constrain an array's last item. Other validators ignore it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, ValidationError, validators

from charter.errors import InputError

SCHEMA_NAMES = ("constitution", "candidates", "judgments", "pairs", "rejects", "human_prefs", "sft")
_SHORT = 60  # longest value shown in a message; rows can hold whole responses


@dataclass(frozen=True)
class FieldError:
    """One schema violation: where it is (keys and list indexes from the top) and what is wrong."""

    path: tuple[str | int, ...]
    message: str

    @property
    def field(self) -> str:
        """The path as users write it, e.g. ``principles[3].comparison``; ``""`` for the top."""
        return format_path(self.path)


def format_path(path: Iterable[str | int]) -> str:
    """Render a path of keys and indexes as ``a.b[0].c``.

    A key that is empty or holds a line break or other unprintable character is shown quoted
    (``a['\\t\\n']``), so an error naming it stays on one line.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not isinstance(part, str) or not part or not part.isprintable():
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


def _last_role(validator: Any, role: str, instance: Any, schema: dict) -> Iterator[ValidationError]:
    """The ``x-lastRole`` keyword: a chat's last message must come from ``role``."""
    if not validator.is_type(instance, "array") or not instance:
        return
    last = instance[-1]
    if isinstance(last, dict) and last.get("role") != role:
        yield ValidationError(
            f"the last message must be a {role} turn, got {last.get('role')!r}",
            path=(len(instance) - 1, "role"),
        )


_Validator = validators.extend(Draft202012Validator, {"x-lastRole": _last_role})


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load ``charter/schemas/{name}.schema.json`` from package data.

    Raises:
        ValueError: ``name`` is not one of :data:`SCHEMA_NAMES` (a bug in the caller).
    """
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    text = (files("charter") / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator(name: str) -> Any:
    return _Validator(load_schema(name))


def _short(value: Any) -> str:
    if value is None:
        return "an empty value"
    text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _explain(error: ValidationError) -> list[FieldError]:
    """Turn one jsonschema error into messages that name the exact field at fault."""
    path = tuple(error.absolute_path)
    instance = error.instance
    if error.validator == "required":
        missing = [p for p in error.validator_value if p not in instance]
        name = next((p for p in missing if error.message.startswith(repr(p))), missing[0])
        return [FieldError((*path, name), "required field is missing")]
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = list(error.schema.get("properties", {}))
        out = []
        for key in instance:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            out.append(
                FieldError((*path, str(key)), f"unknown field; {hint}allowed: {', '.join(known)}")
            )
        return out
    message = error.message
    full = repr(instance)
    if message.startswith(full):  # most messages open with the value; long ones drown the point
        message = _short(instance) + message[len(full) :]
    return [FieldError(path, message)]


def field_errors(name: str, instance: Any) -> list[FieldError]:
    """All violations of schema ``name`` in ``instance``, most important first.

    Shallower errors come first (a missing field says more than a bad character deep inside),
    then the order of the schema and the row.
    """
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: len(e.absolute_path))
    return [fe for error in errors for fe in _explain(error)]


def row_errors(name: str, row: dict[str, Any]) -> list[str]:
    """Readable messages for every violation of schema ``name`` in ``row``, best first.

    Example: ``["chosen[0].role: 'bot' is not one of ['assistant']"]``; empty if the row is valid.
    """
    return [f"{e.field or '(row)'}: {e.message}" for e in field_errors(name, row)]


@cache
def _fast_check(name: str) -> Any:
    """A yes/no check of schema ``name`` compiled to Python once (fastjsonschema), or None.

    jsonschema walks the schema for every row (~0.4 ms a candidate set); the compiled check is
    tens of times faster, which matters at a million rows. It only says whether a row is valid:
    a failing row goes through :func:`field_errors` for the message. ``x-lastRole`` is checked
    beside it where it sits on a top-level property (all our schemas); anywhere else, None, and
    every row takes the full path.
    """
    schema = load_schema(name)
    last_roles = {
        key: prop["x-lastRole"]
        for key, prop in schema.get("properties", {}).items()
        if "x-lastRole" in prop
    }
    if json.dumps(schema).count('"x-lastRole"') != len(last_roles):
        return None
    compiled = fastjsonschema.compile(
        {**schema, "$schema": "http://json-schema.org/draft-07/schema#"}
    )

    def valid(row: Any) -> bool:
        try:
            compiled(row)
        except fastjsonschema.JsonSchemaException:
            return False
        return not last_roles or all(
            not isinstance(row.get(key), list)
            or not row[key]
            or not isinstance(row[key][-1], dict)
            or row[key][-1].get("role") == role
            for key, role in last_roles.items()
        )

    return valid


def check_rows(
    name: str, rows: Iterable[dict[str, Any]], *, file: str, first_line: int = 1
) -> None:
    """Check every row against schema ``name``; call it right before publishing ``file``.

    ``first_line`` is the file line of the first row (a chunk appended to a file in progress).

    Raises:
        InputError: at the first bad row, with its 1-based row number and the field at fault.
    """
    fast = _fast_check(name)
    for index, row in enumerate(rows):
        if fast is not None and fast(row):
            continue
        problems = field_errors(name, row)
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more in this row)" if len(problems) > 1 else ""
            raise InputError(
                f"row does not match the {name} schema: {first.message}{more}",
                file=file,
                line=index + first_line,
                field=first.field or None,
            )
