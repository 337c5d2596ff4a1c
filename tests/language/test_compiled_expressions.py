"""The compiled expressions against simpleeval, the reference: on every corpus expression
and every context, the same value or the same refusal."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules_engine import load_rule_set
from rules_engine.domain.errors import ExpressionError
from rules_engine.language.conditions import AllOf, AnyOf, ExpressionCondition, NotOf
from rules_engine.language.context import every_root
from rules_engine.language.expressions import ExpressionRuntimeError, compile_expression

from .expression_strategies import expressions, nested
from .test_expressions import CONTEXT as EXPRESSION_CONTEXT
from .test_sandbox import ATTACKS
from .test_sandbox import CONTEXT as SANDBOX_CONTEXT

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
ROOTS = every_root()


def _sources(condition: Any) -> list[str]:
    if isinstance(condition, ExpressionCondition):
        return [condition.expression.source]
    if isinstance(condition, (AllOf, AnyOf)):
        return [s for child in condition.children for s in _sources(child)]
    if isinstance(condition, NotOf):
        return _sources(condition.child)
    return []


EXAMPLE_RULES = [source for rule in load_rule_set([REPO / "rules"]).rules
                 for source in _sources(rule.condition)]
HAND_WRITTEN = [
    "lower(message.text) == 'thanks a lot'", "contains(message.text, 'THANKS')",
    "'vip' in contact.tags", "contact.fields.age >= 18", "contact.fields['age'] + params.n",
    "round(hours_since(conversation.opened_at), 1)", "upper(channel) if conversation.is_open "
    "else 'closed'", "2 ** 10", "params.items", "params.n.real", "contact.fields.height > 3",
    "len(message.text) + (message.text if params.n else 1)", "message.text[0:6]",
    "message.text[::-1]", "contact.tags[0]",
    "contact.tags[5]", "1 < params.n < 10", "1 < params.n > 100", "not params.n",
    "params.n or 'default'", "params.n and 'set'", "-params.n", "~params.n", "+params.n",
    "[1, 2, params.n]", "(params.n,)", "{params.n, 1}", "{'a': params.n}", "params.n / 0",
    "7 // params.n", "params.n % 3", "'%s-%d' % (message.text, params.n)", "abs(-params.n)",
    "min(params.n, 3)", "max([1, 2])", "int('42') + float('1.5')", "str(params.n) * 2",
    "startswith(message.text, 'Th') and endswith(message.text, 'ot')", "strip('  x  ')",
    "contains(contact.tags, 'vip')", "contains(params, 'n')", "params.n is null",
    "params.n is not null", "message.text not in contact.tags", "days_since('2026-11-20')",
    "minutes_since(params.n)", "1 << params.n", "params.n >> 1", "params.n & 3",
    "params.n | 8", "params.n ^ 5", "len(contact.tags) == 1 and contact.name != null",
    "event.depth == 0 or channel == 'facebook'", "contact.fields.age.real",
    "b'ab' * params.n + b'c'", "b'%s-%d' % (b'x', params.n)", "b'%(k)05.1f' % {b'k': params.n}",
    "str(b'ab' + b'\\x00')", "int(b'42') + len(b'abc')", "contains(b'abc', b'b')",
    "'%(a)s %(a)r' % {'a': message.text}", "{1: 2} | {params.n: 3}", "{params.n} ^ {1}",
]
ATTACK_SOURCES = [source for pair in ATTACKS for source in pair]


def outcome(evaluate: Any, context: dict) -> tuple[str, Any]:
    try:
        value = evaluate(context, now=NOW)
    except ExpressionRuntimeError:
        return "refused", None
    if isinstance(value, float) and math.isnan(value):
        return "value", "nan"
    return "value", value


def assert_agree(source: str, context: dict) -> None:
    try:
        compiled = compile_expression(source, ROOTS)
    except ExpressionError:
        return  # refused at load time: neither evaluator ever runs it
    ours = outcome(compiled.evaluate, context)
    reference = outcome(compiled.evaluate_reference, context)
    assert ours == reference, (source, ours, reference)


@pytest.mark.parametrize("source", EXAMPLE_RULES + HAND_WRITTEN + ATTACK_SOURCES)
@pytest.mark.parametrize("context", [EXPRESSION_CONTEXT, SANDBOX_CONTEXT], ids=["event", "sandbox"])
def test_the_corpus_agrees_with_simpleeval(source, context):
    full = {**context, "intent": {"display_name": "talk.to.human", "name": "x", "confidence": 0.9},
            "actor": "page", "conversation": {"is_open": True, "close_source": "automation",
                                              "opened_at": (NOW - timedelta(hours=2)).isoformat(),
                                              "team": "billing", **context.get("conversation", {})}}
    assert_agree(source, full)


def test_the_corpus_is_not_empty():
    assert len(EXAMPLE_RULES) >= 10


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["a", "b", "text", "n", "tags"]), inner, max_size=4), max_leaves=10)
_CONTEXTS = st.fixed_dictionaries({
    "params": st.dictionaries(st.sampled_from(["a", "b", "n", "text"]), _VALUES, max_size=4),
    "message": st.fixed_dictionaries({"text": st.text(max_size=12), "id": st.none()}),
    "contact": st.fixed_dictionaries({"tags": st.lists(st.text(max_size=4), max_size=3),
                                      "name": st.none() | st.text(max_size=5),
                                      "fields": st.dictionaries(st.sampled_from(["a", "n"]),
                                                                _VALUES, max_size=2)}),
    "channel": st.sampled_from(["facebook", "viber"]),
})
ATOMS = ["params.a", "params.b", "params.n", "params.text", "message.text", "contact.tags",
         "contact.name", "contact.fields.a", "channel", "0", "1", "-2", "1.5", "'x'", "'ab'",
         "null", "true", "[]", "[1, 'a']", "params['a']", "contact.tags[0]", "message.text[1:]",
         "b'x'", "b'%s%d'", "b'ab' * 3", "'%(a)s'", "{'a': 1}"]
OPERATORS = ["+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^", "==", "!=", "<",
             "<=", ">", ">=", "in", "not in", "and", "or", "is", "is not"]
FUNCTIONS = ["lower", "upper", "strip", "len", "str", "int", "float", "abs", "min", "max",
             "round"]


@settings(max_examples=1500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(expressions(ATOMS, OPERATORS, FUNCTIONS, 3), _CONTEXTS)
def test_generated_expressions_agree_with_simpleeval(source, context):
    assert_agree(source, {**context, "event": {"depth": 0}, "conversation": {"is_open": True}})


def test_the_public_condition_api():
    from rules_engine import EventError, compile_condition

    condition = compile_condition(
        "contains(message.text, 'refund') and 'vip' in contact.tags and conversation.is_open",
        trigger="message.received")
    context = {"message": {"text": "A REFUND please"}, "contact": {"tags": ["vip"]},
               "conversation": {"is_open": True}}
    assert condition.evaluate(context) is True
    assert condition.evaluate({**context, "contact": {"tags": []}}) is False
    with pytest.raises(ExpressionRuntimeError, match="no field 'text'"):
        condition.evaluate({**context, "message": {}})
    with pytest.raises(ExpressionError, match="unknown name 'intent'"):
        compile_condition("intent.name == 'x'", trigger="message.received")
    assert compile_condition("intent.confidence > 0.5", trigger="dialogflow.fulfillment") \
        .evaluate({"intent": {"confidence": 0.9}})
    with pytest.raises(EventError, match="unknown trigger"):
        compile_condition("true", trigger="message.recieved")


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(nested(["params.n", "message.text", "b'x'", "1.5"], st.integers(1, 48)), _CONTEXTS)
def test_nested_expressions_agree_with_simpleeval(case, context):
    assert_agree(case[0], {**context, "event": {"depth": 0}, "conversation": {"is_open": True}})
