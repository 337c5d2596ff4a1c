"""The sandbox's budget, tried as an attacker would: each value an expression can build is
bounded, each evaluation has a step and time budget, load-time folding runs under it.
Times are this process's CPU time, so other work on the machine cannot make them flaky."""
from __future__ import annotations

import time
import tracemalloc
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings

from rules_engine import RuleSetInvalid, expressions, load_rule_set
from rules_engine.conditions import _preview
from rules_engine.context import roots_for
from rules_engine.errors import ExpressionError
from rules_engine.expressions import ExpressionRuntimeError, compile_expression
from rules_engine.model import EventType

from .expression_strategies import expressions as generated_expressions

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
ROOTS = roots_for(EventType.MESSAGE_RECEIVED)
CONTEXT = {"message": {"text": "x", "id": "m1"}, "params": {"n": 0, "big": 10**9, "one": 1.0},
           "contact": {"tags": [], "fields": {}, "name": None}, "channel": "facebook",
           "conversation": {"is_open": True}, "event": {"depth": 0}}
LIMIT_SECONDS = 0.05
LIMIT_BYTES = 20_000_000

# The attacks of the issue, written once as constants (refused at load time) and once
# reading the event (refused at run time, when the rule's condition counts as false).
ATTACKS = [
    ("[[0]*100000]*100000", "[[params.n]*100000]*100000"),
    ("round(1, -10**8)", "round(params.one, -10**8)"),
    ("str(['x'*99999]*100000)", "str([message.text*99999]*100000)"),
    ("'%0999999999d' % 0", "'%0999999999d' % params.n"),
    ("'%.999999999f' % 1.0", "'%.999999999f' % params.one"),
    ("'%*d' % (10**9, 1)", "'%*d' % (params.big, 1)"),
    ("max([0]*100000 * 100000)", "max([params.n]*100000 * 100000)"),
    ("len(str([[1]*1000]*999))", "len(str([[params.n]*1000]*999))"),
    ("(('x'*99999) + ('y'*99999))", "((message.text*99999) + (message.text*99999))"),
    ("{1: 'x'*99999, 2: 'y'*99999}", "{1: message.text*99999, 2: message.text*99999}"),
]


def measured(work):
    """Run ``work``; (its outcome, seconds, peak bytes allocated)."""
    tracemalloc.start()
    started = time.process_time()
    try:
        outcome = work()
    except (ExpressionError, ExpressionRuntimeError) as refusal:
        outcome = refusal
    seconds = time.process_time() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return outcome, seconds, peak


@pytest.mark.parametrize("constant, reading", ATTACKS)
def test_an_attack_written_as_a_constant_is_refused_at_load_time(constant, reading):
    outcome, seconds, peak = measured(lambda: compile_expression(constant, ROOTS))
    assert isinstance(outcome, ExpressionError) and "always fails" in str(outcome)
    assert seconds < LIMIT_SECONDS * 4 and peak < LIMIT_BYTES  # tracemalloc slows it down


@pytest.mark.parametrize("constant, reading", ATTACKS)
def test_an_attack_reading_the_event_is_refused_at_run_time(constant, reading):
    compiled = compile_expression(reading, ROOTS)
    started = time.process_time()
    with pytest.raises(ExpressionRuntimeError):
        compiled.evaluate(CONTEXT, now=NOW)
    assert time.process_time() - started < LIMIT_SECONDS
    _, _, peak = measured(lambda: compiled.evaluate(CONTEXT, now=NOW))
    assert peak < LIMIT_BYTES


def test_a_rule_file_with_an_attack_fails_validation_quickly(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: hang\n    trigger: {event: message.received}\n"
        "    conditions: [\"len(str([[0]*100000]*100000)) > 0\"]\n"
        "    actions: [{add_tag: {tag: x}}]\n", "utf-8")
    started = time.process_time()
    with pytest.raises(RuleSetInvalid) as invalid:
        load_rule_set([tmp_path])
    assert time.process_time() - started < 1
    assert "always fails" in str(invalid.value) and "[hang]" in str(invalid.value)


def test_the_step_budget_holds_by_construction():
    """No loops, at most MAX_NODES parts: an evaluation can never take more steps."""
    assert expressions.MAX_NODES <= expressions.MAX_STEPS
    with pytest.raises(ExpressionError, match="more than 400 parts"):
        compile_expression("+".join(["1"] * 401), ROOTS)


def test_the_reference_evaluator_keeps_to_its_step_budget(monkeypatch):
    compiled = compile_expression(" + ".join(["params.n"] * 60), ROOTS)
    assert compiled.evaluate_reference(CONTEXT, now=NOW) == 0
    monkeypatch.setattr(expressions, "MAX_STEPS", 100)
    with pytest.raises(ExpressionRuntimeError, match="budget of 100 steps"):
        compiled.evaluate_reference(CONTEXT, now=NOW)


def test_the_work_budget_stops_slow_work():
    """30 renderings of a 15,000-item list: each allowed, together over the budget."""
    context = {**CONTEXT, "params": {"items": list(range(15_000))}}
    compiled = compile_expression(" + ".join(["len(str(params.items))"] * 30), ROOTS)
    started = time.process_time()
    with pytest.raises(ExpressionRuntimeError, match="work budget of 1,000,000"):
        compiled.evaluate(context, now=NOW)
    assert time.process_time() - started < LIMIT_SECONDS
    fewer = compile_expression(" + ".join(["len(str(params.items))"] * 3), ROOTS)
    assert fewer.evaluate(context, now=NOW) == 3 * len(str(list(range(15_000))))


def test_the_reference_evaluator_keeps_to_its_time_budget(monkeypatch):
    monkeypatch.setattr(expressions, "MAX_EVALUATION_SECONDS", 0.003)
    context = {**CONTEXT, "params": {"items": list(range(15_000))}}
    compiled = compile_expression(" + ".join(["len(str(params.items))"] * 30), ROOTS)
    with pytest.raises(ExpressionRuntimeError, match="time budget of 3 ms"):
        compiled.evaluate_reference(context, now=NOW)


def test_the_trace_preview_is_bounded_before_it_is_built():
    shared = ["x" * 1000] * 100
    huge = [shared] * 10_000  # 10^9 characters if rendered whole
    started = time.process_time()
    preview = _preview(huge)
    assert time.process_time() - started < 0.01 and len(preview) <= 80
    assert _preview(10**5000) == "<an integer of 16610 bits>"


# Structure-aware generated expressions: numbers, strings and lists joined by the operators
# and functions an attacker would reach for, nested.
ATOMS = ["0", "1", "7", "99999", "10**9", "-3", "1.5", "'x'", "'%0999d'", "'ab'*50000",
         "[0]*1000", "[[1]*100]*100", "message.text", "params.big", "params.one", "()", "{}"]
OPERATORS = ["+", "*", "%", "**", "<<", "-", "//", "==", "<", "in"]
FUNCTIONS = ["str", "len", "round", "min", "max", "abs", "int", "float", "lower"]


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(generated_expressions(ATOMS, OPERATORS, FUNCTIONS, 4))
def test_any_generated_expression_is_refused_or_evaluated_within_bounds(source):
    started = time.process_time()
    try:
        compiled = compile_expression(source, ROOTS)
        compiled.evaluate(CONTEXT, now=NOW)
    except (ExpressionError, ExpressionRuntimeError):
        pass
    assert time.process_time() - started < 0.25  # compile (with folding) plus evaluate
