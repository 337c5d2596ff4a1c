"""The trace types say what traces are: every trace the example rules produce, stored and
read, has exactly the keys and value types ``rules_engine.trace.shapes`` declares."""
from __future__ import annotations

import json
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any, NotRequired, Union, get_args, get_origin, get_type_hints

from rules_engine import Engine, load_rule_set, parse_event
from rules_engine.trace import shapes
from rules_engine.trace.forms import read_trace

RULES = Path(__file__).resolve().parents[2] / "rules"


def mismatches(value: Any, expected: Any, where: str = "$") -> list[str]:
    """Where ``value`` (JSON) departs from the type ``expected`` (TypedDicts, lists, dicts,
    unions, Literal-free scalars, Any)."""
    if expected is Any:
        return []
    origin = get_origin(expected)
    if origin is NotRequired:
        return mismatches(value, get_args(expected)[0], where)
    if origin in (Union, types.UnionType):
        options = [mismatches(value, option, where) for option in get_args(expected)]
        return [] if any(not found for found in options) else min(options, key=len)
    if typing.is_typeddict(expected):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not {expected.__name__}"]
        hints = get_type_hints(expected)
        found = [f"{where}.{key}: not declared in {expected.__name__}"
                 for key in value if key not in hints]
        found += [f"{where}.{key}: missing from {expected.__name__}"
                  for key in expected.__required_keys__ if key not in value]
        for key, item in value.items():
            if key in hints:
                found += mismatches(item, hints[key], f"{where}.{key}")
        return found
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [m for index, item in enumerate(value)
                for m in mismatches(item, get_args(expected)[0], f"{where}[{index}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        return [m for key, item in value.items()
                for m in mismatches(item, get_args(expected)[1], f"{where}.{key}")]
    if expected is type(None):
        return [] if value is None else [f"{where}: {value!r}, not null"]
    if expected is int and isinstance(value, bool):
        return [f"{where}: {value!r}, not an int"]
    return [] if isinstance(value, expected) else [
        f"{where}: {value!r}, not {getattr(expected, '__name__', expected)}"]


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_every_trace_of_the_example_rules_has_the_declared_shape(store):
    rules = load_rule_set(RULES)
    engine = Engine(store, rules)
    events = [json.loads(line) for line in (RULES / "events" / "demo.jsonl").read_text().splitlines()]
    results = [engine.process(parse_event(data)) for data in events]
    results.append(engine.process(parse_event(events[1])))  # a repeat
    last = max(parse_event(data).timestamp for data in events)
    results += [outcome for _, outcome in engine.fire_all_due(last + timedelta(days=8))]
    shallow = Engine(store, rules, max_depth=0)  # facts past the bound are dropped
    results.append(shallow.process(parse_event({**events[1], "id": "shallow-1"})))
    assert results[-1].trace and results[-1].trace["depth_bound"]["dropped"]
    assert {r.status for r in results} >= {"applied", "duplicate"}
    assert any(step["rules"] for r in results if r.stored_trace for step in r.stored_trace["steps"])
    problems: list[str] = []
    for result in results:
        if result.stored_trace is not None:
            problems += mismatches(as_json(result.stored_trace), shapes.StoredTrace, result.event_id)
        assert result.trace is not None
        problems += mismatches(as_json(result.trace), shapes.Trace, result.event_id)
        with store.read() as tx:
            problems += mismatches(as_json(read_trace(tx, result.event_id)), shapes.Trace,
                                   f"read {result.event_id}")
    problems += mismatches(as_json(rules.catalog()), shapes.Catalog, "catalog")
    assert problems == []


def test_a_key_the_types_do_not_declare_is_found():
    line = {"path": "conditions", "expr": "true", "result": True, "colour": "red"}
    assert mismatches(line, shapes.ConditionLine) == ["$.colour: not declared in ConditionLine"]
    assert mismatches({"detail": "added vip"}, shapes.StoredOutcome) == [
        "$.outcome: missing from StoredOutcome"]
    assert mismatches({"rule_id": "r", "conditions": {"": 3}}, shapes.StoredRule) != []
