"""Expressions typed at load time: what always fails is refused with a working fix, what is
never true is warned about, and (Hypothesis) the types never claim more than evaluation
shows: a refused expression fails for every event its fields' types allow, an accepted one
evaluates to a value of the kinds inferred, and a comparison called never true is false."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules_engine.domain.errors import ExpressionError
from rules_engine.domain.model import EventType
from rules_engine.language import expressions
from rules_engine.language.context import (
    CONVERSATION,
    DIALOGFLOW_PARAMS,
    MESSAGE,
    roots_for,
)
from rules_engine.language.expressions import (
    FUNCTION_NAMES,
    ExpressionRuntimeError,
    compile_expression,
)
from rules_engine.language.types import SIGNATURES, Kind, Type, TypeReport

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
ROOTS = roots_for(EventType.MESSAGE_RECEIVED)
DIALOGFLOW = roots_for(EventType.DIALOGFLOW_FULFILLMENT)


def refusal(source: str, roots: Any = ROOTS) -> ExpressionError:
    with pytest.raises(ExpressionError) as refused:
        compile_expression(source, roots)
    return refused.value


def warnings(source: str, roots: Any = ROOTS) -> list[str]:
    return [f"{w.message} | {(w.hint or '').replace('`', '')}"
            for w in compile_expression(source, roots).warnings]


def test_every_function_has_a_signature_and_its_example_compiles_clean():
    assert set(SIGNATURES) == set(FUNCTION_NAMES)
    for name, signature in SIGNATURES.items():
        roots = DIALOGFLOW if "params" in signature.example else ROOTS
        assert compile_expression(signature.example, roots).warnings == (), name


@pytest.mark.parametrize("source, message, hint", [
    ("len(message.text, 2)", "len() takes 1 argument, not 2", "e.g. len(message.text)"),
    ("in_business_hours(message.text)", "in_business_hours() takes 0 arguments, not 1",
     "e.g. in_business_hours()"),
    ("round()", "round() takes 1 or 2 arguments, not 0", "e.g. round("),
    ("min()", "min() takes at least 1 argument, not 0", "e.g. min(1, 2)"),
    ("lower(contact.tags)", "lower() takes text, and contact.tags is list", "lower(message.text)"),
    ("hours_since(contact.id)", "hours_since() takes text, and contact.id is number",
     "hours_since(conversation.opened_at)"),
    ("len(message.text) + 'x'", "'+' cannot join number (len(message.text)) and text ('x')",
     "write the number as text: str(len(message.text)) + 'x'"),
    ("message.text - 1", "'-' cannot join text", "use the text's length: len(message.text) - 1"),
    ("len(message.text) > 'x'", "compares number with text", "len(message.text) > len('x')"),
    ("-message.text", "'-' needs a number", "-len(message.text)"),
    ("1 in contact.id", "contact.id is number, which holds nothing", "'vip' in contact.tags"),
    ("contact.id in message.text", "looks for number in a text", "str(contact.id) in message.text"),
    ("contains(message.text, contact.id)", "contains() on a text looks for a text",
     "contains(message.text, str(contact.id))"),
])
def test_what_always_fails_is_refused_with_the_fix(source, message, hint):
    refused = refusal(source)
    assert message in refused.message and hint in (refused.hint or "").replace("`", ""), refused


@pytest.mark.parametrize("source, roots, said", [
    ("message.text == true", ROOTS, "compare with the text: message.text == 'true'"),
    ("conversation.status == 'opened'", ROOTS, "did you mean open?"),
    ("conversation.open_source == 'message'", ROOTS, "one of automation, incoming_message"),
    ("conversation.close_source in ['bot', 'user']", ROOTS, "compare with one of"),
    ("event.type == 'message.recieved'", ROOTS, "did you mean message.received?"),
    ("contact.id == 'vip'", ROOTS, "number never equals text"),
    ("params.RB_MARKDONE == true", DIALOGFLOW, "write flag(params.RB_MARKDONE)"),
    ("params.RB_MARKDONE != false", DIALOGFLOW, "write flag(params.RB_MARKDONE)"),
    ("params.RB_MARKDONE == false", DIALOGFLOW, "write not flag(params.RB_MARKDONE)"),
])
def test_what_is_never_true_is_a_warning_with_the_fix(source, roots, said):
    [warning] = warnings(source, roots)
    assert said in warning


@pytest.mark.parametrize("source", [
    "message.text == 'true'", "conversation.status == 'open'", "params.x == true",
    "contact.fields.vip == true", "conversation.assignee == null", "contact.id == 1.0",
    "conversation.is_open == 1", "'vip' in contact.tags", "contains(contact.tags, 'vip')",
    "str(contact.id) + message.text", "len(contact.tags) * 2 > 3", "message.text * 2",
    "conversation.status in ['open', 'closed']", "flag(params.RB_MARKDONE)",
])
def test_what_can_be_true_is_accepted_quietly(source):
    assert warnings(source, DIALOGFLOW if "RB_" in source else ROOTS) == []


def test_the_messages_quote_the_expression_as_written():
    [warning] = compile_expression("message.text == true", ROOTS).warnings
    assert "'message.text == true'" in warning.message  # not Python's True


# -- Hypothesis: the types claim nothing that evaluation contradicts -------------------------

FIELDS = {  # a chain the message.received context has, and the spec it comes from
    "message.text": MESSAGE["text"], "message.reply_to": MESSAGE["reply_to"],
    "message.attachments": MESSAGE["attachments"], "message.edited": MESSAGE["edited"],
    "conversation.id": CONVERSATION["id"], "conversation.status": CONVERSATION["status"],
    "conversation.is_open": CONVERSATION["is_open"],
    "conversation.opened_at": CONVERSATION["opened_at"],
    "conversation.assignee": CONVERSATION["assignee"], "contact.tags": roots_for(
        EventType.MESSAGE_RECEIVED)["contact"]["tags"],  # type: ignore[index]
    "params.x": DIALOGFLOW_PARAMS.field(),
}
LITERALS = ["'x'", "'open'", "'2026-01-05T08:00:00+00:00'", "0", "2", "1.5", "true", "false",
            "null", "[1, 'a']", "{'k': 1}"]
OPERATORS = ["+", "-", "*", "/", "%", "<", ">=", "==", "!=", "in", "not in", "and", "or", "|"]
FUNCTIONS = sorted(name for name in FUNCTION_NAMES if name != "in_business_hours")

atoms = st.sampled_from([*FIELDS, *LITERALS])


def calls(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(FUNCTIONS), st.lists(inner, min_size=0, max_size=3)).map(
        lambda t: f"{t[0]}({', '.join(t[1])})")


EAGER = [operator for operator in OPERATORS if operator not in ("and", "or")]
# Without and / or / if, every part of an expression runs whenever the whole does, so a
# part that always fails makes the whole fail.
eager_expressions = st.recursive(atoms, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from(EAGER), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    calls(inner), inner.map(lambda e: f"(not {e})"), inner.map(lambda e: f"(-{e})")),
    max_leaves=6)
expressions_ = st.recursive(atoms, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from(OPERATORS), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    calls(inner), inner.map(lambda e: f"(not {e})"), inner.map(lambda e: f"(-{e})"),
    st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})")),
    max_leaves=6)


def value_of(kind: Kind, spec: Type) -> st.SearchStrategy[Any]:
    if kind is Kind.TEXT:
        return st.sampled_from(sorted(spec.values)) if spec.values else st.sampled_from(
            ["", "x", "open", "42", "2026-01-05T08:00:00+00:00"])
    return {Kind.NUMBER: st.one_of(st.integers(-3, 3), st.floats(-2, 2)),
            Kind.BOOL: st.booleans(), Kind.NULL: st.none(),
            Kind.LIST: st.lists(st.sampled_from(["a", "vip", 1]), max_size=2),
            Kind.MAP: st.dictionaries(st.sampled_from(["k", "x"]), st.integers(0, 2), max_size=2),
            }[kind]


@st.composite
def contexts(draw: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"message": {}, "conversation": {}, "contact": {}, "params": {}}
    for chain, spec in FIELDS.items():
        root, name = chain.split(".")
        kind = draw(st.sampled_from(sorted(spec.kinds)))
        context[root][name] = draw(value_of(kind, spec))
    return context


def kind_of(value: Any) -> Kind:
    if isinstance(value, bool):
        return Kind.BOOL
    if isinstance(value, int | float):
        return Kind.NUMBER
    if isinstance(value, str | bytes):
        return Kind.TEXT
    if value is None:
        return Kind.NULL
    return Kind.MAP if isinstance(value, dict) else Kind.LIST


def untyped(source: str) -> expressions.CompiledExpression:
    """The expression compiled with the load-time types left out (to evaluate what they
    refuse)."""
    original = expressions.check_types
    expressions.check_types = lambda tree, text, field: TypeReport(
        Type(frozenset(Kind)))  # type: ignore[assignment]
    try:
        return compile_expression(source, DIALOGFLOW)
    finally:
        expressions.check_types = original


def outcome(compiled: expressions.CompiledExpression, context: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", compiled.evaluate(context, now=NOW)
    except ExpressionRuntimeError:
        return "error", None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=eager_expressions, samples=st.lists(contexts(), min_size=4, max_size=4))
def test_an_expression_refused_for_its_types_fails_for_every_event(source, samples):
    try:
        compile_expression(source, DIALOGFLOW)
    except ExpressionError as refused:
        if "whenever it runs" not in refused.message and "takes" not in refused.message \
                and "needs a number" not in refused.message \
                and "looks for a text" not in refused.message:
            return  # refused for another reason (a constant that always fails, say)
        try:
            loose = untyped(source)
        except ExpressionError as folded:  # it reads no field, and evaluating it failed
            assert "always fails" in folded.message, (source, folded)
            return
        for context in samples:  # refused: no event of these types makes it work
            assert outcome(loose, context)[0] == "error", (source, context, refused)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=expressions_, samples=st.lists(contexts(), min_size=4, max_size=4))
def test_an_accepted_expression_evaluates_to_the_kinds_inferred(source, samples):
    try:
        compiled = compile_expression(source, DIALOGFLOW)
    except ExpressionError:
        return
    for context in samples:
        result, value = outcome(compiled, context)
        if result == "value":
            assert kind_of(value) in compiled.type.kinds, (source, context, value, compiled.type)


comparisons = st.tuples(atoms, st.sampled_from(["==", "!="]), atoms).map(
    lambda t: f"{t[0]} {t[1]} {t[2]}")


@settings(max_examples=300, deadline=None)
@given(source=comparisons, samples=st.lists(contexts(), min_size=4, max_size=4))
def test_a_comparison_called_never_true_is_never_true(source, samples):
    compiled = compile_expression(source, ROOTS | {"params": DIALOGFLOW_PARAMS})
    if not any("never" in w.message for w in compiled.warnings):
        return
    for context in samples:
        result, value = outcome(compiled, {**context, "params": {"x": "true"}})
        if result == "value":
            assert value is ("!=" in source), (source, context)


_SCHEMA_KINDS = {"string": Kind.TEXT, "array": Kind.LIST, "boolean": Kind.BOOL,
                 "number": Kind.NUMBER, "integer": Kind.NUMBER, "object": Kind.MAP}


@pytest.mark.parametrize("part, spec", [("message", MESSAGE),
                                        ("intent", roots_for(EventType.DIALOGFLOW_FULFILLMENT)["intent"])])
def test_the_fields_an_event_brings_have_the_kinds_its_schema_gives(part, spec):
    """The event schema (the single source of truth for what arrives) and the types the
    conditions are checked against name the same fields with the same kinds."""
    from rules_engine.formats.schema import load_schema

    declared = load_schema("event")["properties"][part]["properties"]
    assert set(declared) == set(spec)
    for name, schema in declared.items():
        assert spec[name].kinds - {Kind.NULL} == {_SCHEMA_KINDS[schema["type"]]}, name
