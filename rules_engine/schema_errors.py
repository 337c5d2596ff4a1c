"""Turning jsonschema's errors into messages a person can act on (what, where, how to fix)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from .errors import did_you_mean

_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "text", "integer": "a whole number",
    "number": "a number", "boolean": "true or false", "null": "nothing",
}


def _describe_type(expected: Any) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    return " or ".join(_TYPE_NAMES.get(name, name) for name in names)


def _actual(instance: Any) -> str:
    for python_type, name in ((bool, "boolean"), (int, "integer"), (float, "number"),
                              (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(instance, python_type):
            return _TYPE_NAMES[name]
    return "nothing" if instance is None else type(instance).__name__


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One schema violation: the document path it is about, and what to say."""

    path: tuple[str | int, ...]
    message: str
    hint: str | None
    at_key: bool = False


def _most_specific(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf failures, the sub-error of the branch that fits the value's type best.

    A branch that failed only on the type of the value is the least relevant one.
    """
    while error.validator in ("anyOf", "oneOf") and error.context:
        fitting_type = [e for e in error.context
                        if not (e.validator == "type" and e.absolute_path == error.absolute_path)]
        deeper = best_match(fitting_type or error.context)
        if deeper is None:
            break
        error = deeper
    return error


def explain(error: ValidationError) -> list[SchemaProblem]:
    """One or more problems (one per unknown key) for a jsonschema error."""
    error = _most_specific(error)
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    if kind == "additionalProperties":
        known = list(schema.get("properties", {}))
        is_action = "open_conversation" in known
        extras = [key for key in error.instance if key not in known]
        what = "action" if is_action else "key"
        return [
            SchemaProblem(path + (key,), f"unknown {what} '{key}'",
                          did_you_mean(str(key), known) or f"allowed: {', '.join(known)}", True)
            for key in extras
        ]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [SchemaProblem(path, f"missing required key '{missing}'", f"add `{missing}: ...`")]
    if kind == "type":
        expected = _describe_type(error.validator_value)
        where = f"`{path[-1]}`" if path and isinstance(path[-1], str) else "this place"
        return [SchemaProblem(path, f"expected {expected}, got {_actual(error.instance)}",
                              schema.get("description") or f"{where} takes {expected}")]
    if kind == "enum":
        options = [str(option) for option in error.validator_value]
        hint = did_you_mean(str(error.instance), options) or f"one of: {', '.join(options)}"
        noun = "trigger event" if path and path[-1] == "event" else "value"
        return [SchemaProblem(path, f"unknown {noun} '{error.instance}'", hint)]
    if kind == "pattern":
        return [SchemaProblem(path, f"'{error.instance}' is not a valid {path[-1] if path else 'value'}",
                              schema.get("description") or f"must match {error.validator_value}")]
    if kind in ("minProperties", "maxProperties") and "open_conversation" in schema.get("properties", {}):
        return [SchemaProblem(path, "each action must be exactly one action name with its arguments",
                              "write e.g. `- assign: {user: susan}` as its own list item")]
    if kind == "maxProperties" and set(schema.get("properties", {})) == {"all", "any", "not"}:
        return [SchemaProblem(path, "a condition mapping holds exactly one of all / any / not",
                              "nest them: `all: [..., {any: [...]}]`")]
    if kind == "oneOf":
        return [SchemaProblem(path, "give only one of the alternatives",
                              schema.get("description") or "remove one of them")]
    return [SchemaProblem(path, error.message, schema.get("description")
                          or "run `rules-engine schema` to see what this place accepts")]
