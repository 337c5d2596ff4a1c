"""Turning jsonschema's errors into messages a person can act on (what, where, how to fix)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from rules_engine.domain.errors import did_you_mean
from rules_engine.domain.model import CUSTOM_PREFIX

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


def _yaml(value: Any) -> str:
    """A value as it would be written in a rule file (flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value).replace('"', "")
    return str(value)


def _fix(path: tuple[str | int, ...], schema: dict[str, Any], fallback: str) -> str:
    """The fix, written as an example when the schema has one: e.g. `priority: 10`."""
    examples = schema.get("examples")
    key = next((part for part in reversed(path) if isinstance(part, str)), None)
    if examples and key:
        return f"e.g. `{key}: {_yaml(examples[0])}`"
    if examples:
        return f"e.g. {_yaml(examples[0])}"
    return schema.get("description") or fallback


def _channel_hint(name: Any) -> str:
    from rules_engine.domain.channels import (
        known_channels,  # the channel registry, read when needed
    )

    known = sorted(known_channels())
    suggestion = did_you_mean(str(name).lower(), known)
    return suggestion or f"channel names are lower case: {', '.join(known)}, or your own"


def _scalar_for_mapping(path: tuple[str | int, ...], schema: Mapping[str, Any],
                        instance: Any) -> str | None:
    """A text where a mapping belongs: an action written as its bare name (``- assign``),
    or an action's one value written without its key (``close_conversation: done``)."""
    properties = schema.get("properties", {})
    if not isinstance(instance, str) or "object" not in _types(schema) or not properties:
        return None
    if "open_conversation" in properties:  # the list of actions
        if instance not in properties:
            return did_you_mean(instance, list(properties)) or f"actions: {', '.join(properties)}"
        arguments = _resolve(properties[instance])
        examples = arguments.get("examples")
        if examples:
            return f"write `- {instance}: {_yaml(examples[0])}`"
        if "null" in _types(arguments):
            return f"write `- {instance}:` (an action is a key; its options follow the colon)"
        return f"write `- {instance}: {{...}}` with its arguments (`rules-engine schema`)"
    key = next((part for part in reversed(path) if isinstance(part, str)), None)
    text_keys = [name for name, sub in properties.items() if "string" in _types(_resolve(sub))]
    if key is None or not text_keys:
        return None
    return f"write `{key}: {{{text_keys[0]}: {_yaml(instance)}}}`"


def _types(schema: Mapping[str, Any]) -> list[str]:
    kinds = schema.get("type", [])
    return [kinds] if isinstance(kinds, str) else list(kinds)


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """A ``$ref`` to the rules schema's ``$defs`` followed (the only references it has)."""
    from rules_engine.formats.schema import rules_schema

    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/"):
        return rules_schema()["$defs"][reference.removeprefix("#/$defs/")]
    return schema


_CHOOSE_SHAPE = ("write `choose: {branches: [{conditions: ..., actions: [...]}, ...], "
                 "default: [...]}`: the branches go under `branches:`, and the default "
                 "beside them")


def _misplaced(key: Any, known: list[str]) -> str | None:
    """A hint for a key written one level too deep: a choose's default among its branches."""
    return _CHOOSE_SHAPE if key == "default" and known == ["conditions", "actions"] else None


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One schema violation: the document path it is about, and what to say (``missing``:
    the key the mapping at ``path`` lacks, when that is the violation)."""

    path: tuple[str | int, ...]
    message: str
    hint: str | None
    at_key: bool = False
    missing: str | None = None


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
    if kind == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list(schema.get("properties", {}))
        is_action = "open_conversation" in known
        extras = [key for key in error.instance if key not in known]
        what = "action" if is_action else "key"
        return [
            SchemaProblem(path + (key,), f"unknown {what} '{key}'",
                          did_you_mean(str(key), known) or _misplaced(key, known)
                          or f"allowed: {', '.join(known)}", True)
            for key in extras
        ]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [SchemaProblem(path, f"missing required key '{missing}'", f"add `{missing}: ...`",
                              missing=missing)]
    if kind == "type":
        expected = _describe_type(error.validator_value)
        if not path and isinstance(error.instance, list):
            return [SchemaProblem(path, "a rule file is a mapping with `rules:` and a list of "
                                  "rules under it, not a bare list",
                                  "add a first line `rules:` and indent the list under it")]
        if path and path[-1] == "choose" and isinstance(error.instance, list):
            return [SchemaProblem(path, "choose takes a mapping of `branches:` and "
                                  "`default:`, not a list", _CHOOSE_SHAPE)]
        where = f"`{path[-1]}`" if path and isinstance(path[-1], str) else "this place"
        return [SchemaProblem(path, f"expected {expected}, got {_actual(error.instance)}",
                              _scalar_for_mapping(path, schema, error.instance)
                              or _fix(path, schema, f"{where} takes {expected}"))]
    if kind == "enum" and isinstance(error.validator_value, list):
        options = [str(option) for option in error.validator_value]
        hint = did_you_mean(str(error.instance), options) or f"one of: {', '.join(options)}"
        if str(error.instance).startswith(CUSTOM_PREFIX):
            hint = ("a custom event is custom.<name>, the name in lower case, digits and _ "
                    "(e.g. custom.order_shipped)")
        noun = "trigger event" if path and path[-1] == "event" else "value"
        if isinstance(error.instance, bool):  # YAML reads on/off/yes/no as true/false
            return [SchemaProblem(path, f"unknown {noun} {str(error.instance).lower()} (YAML reads "
                                  "on, off, yes and no as true or false)",
                                  f"one of: {', '.join(options)}")]
        return [SchemaProblem(path, f"unknown {noun} '{error.instance}'", hint)]
    if kind == "pattern":
        if len(path) >= 2 and path[-2] == "channels":
            return [SchemaProblem(path, f"'{error.instance}' is not a channel name",
                                  _channel_hint(error.instance))]
        name = next((part for part in reversed(path) if isinstance(part, str)), "value")
        rule = schema.get("description") or f"must match {error.validator_value}"
        fix = _fix(path, schema, rule)
        return [SchemaProblem(path, f"'{error.instance}' is not a valid {name}",
                              fix if fix == rule else f"{fix}: {rule}")]
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
