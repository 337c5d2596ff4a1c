"""The sandbox's budget, tried as an attacker would: each value an expression can build is
bounded, each evaluation has a step and time budget, load-time folding runs under it.
Times are this process's CPU time, so other work on the machine cannot make them flaky."""
from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules_engine import RuleSetInvalid, load_rule_set
from rules_engine.domain.errors import ExpressionError, RulesEngineError
from rules_engine.domain.model import EventType
from rules_engine.language import expressions
from rules_engine.language.context import roots_for
from rules_engine.language.expressions import (
    MAX_NESTING,
    MAX_VALUE_SIZE,
    ExpressionRuntimeError,
    compile_expression,
    formatted_size,
    preview,
    rendered_size,
)
from rules_engine.language.templates import compile_template

from ..conftest import message
from .expression_strategies import WRAPPERS, format_templates, nested
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
    ("{1: 'x'*60000} | {2: 'y'*60000}", "{1: message.text*60000} | {2: message.text*60000}"),
    # bytes are bounded as texts are
    ("b'%0999999999d' % 0", "b'%0999999999d' % params.n"),
    ("b'%.999999999f' % 1.0", "b'%.999999999f' % params.one"),
    ("b'%*d' % (10**9, 1)", "b'%*d' % (params.big, 1)"),
    ("b'x' * 10**6", "b'x' * params.big"),
    # a key's nested parentheses hide a width from a scan that stops at the first ')'
    ("'%(a(b)c)0999999999d' % {'a(b)c': 0}", "'%(a(b)c)0999999999d' % {'a(b)c': params.n}"),
    # 33,333 unclosed keys: a scan that looks for each one's ')' is quadratic
    ("('%(' * 33333) % {}", "('%(' * 33333) % params"),
    ("(b'%(' * 33333) % {}", "(b'%(' * 33333) % {b'n': params.n}"),
    # one key rendered 16,000 times
    ("('%(a)s' * 16000) % {'a': 'x' * 99990}", "('%(a)s' * 16000) % {'a': message.text * 99990}"),
    ("(b'%(a)s' * 16000) % {b'a': b'x' * 99990}",
     "(b'%(a)s' * 16000) % {b'a': b'x' * (99990 + params.n)}"),
    # 49,999 integers of 1,234 digits: a small value, a 62-million-character text
    ("str([10**1233] * 49999)", "str([params.big ** 137] * 49999)"),
    ("'%s' % ([10**1233] * 49999,)", "'%s' % ([params.big ** 137] * 49999,)"),
    # (min() of a one-item list hands the list itself to minutes_since: a list the load-time
    # types cannot see)
    ("minutes_since(min([[10**1233] * 49999]))", "minutes_since(min([[params.big ** 137] * 49999]))"),
    ("{1: 2}[(10**1233,) * 49999]", "{1: 2}[(params.big ** 137,) * 49999]"),
]


def measured(work):
    """Run ``work``; (its outcome, seconds, peak bytes allocated)."""
    tracemalloc.start()
    started = time.thread_time()
    try:
        outcome = work()
    except (RulesEngineError, ExpressionRuntimeError) as refusal:
        outcome = refusal
    seconds = time.thread_time() - started
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
    started = time.thread_time()
    with pytest.raises(ExpressionRuntimeError):
        compiled.evaluate(CONTEXT, now=NOW)
    assert time.thread_time() - started < LIMIT_SECONDS
    _, _, peak = measured(lambda: compiled.evaluate(CONTEXT, now=NOW))
    assert peak < LIMIT_BYTES


def test_a_rule_file_with_an_attack_fails_validation_quickly(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: hang\n    trigger: {event: message.received}\n"
        "    conditions: [\"len(str([[0]*100000]*100000)) > 0\"]\n"
        "    actions: [{add_tag: {tag: x}}]\n", "utf-8")
    started = time.thread_time()
    with pytest.raises(RuleSetInvalid) as invalid:
        load_rule_set([tmp_path])
    assert time.thread_time() - started < 1
    assert "always fails" in str(invalid.value) and "[hang]" in str(invalid.value)


def test_the_step_budget_holds_by_construction():
    """No loops, at most MAX_NODES parts: an evaluation can never take more steps."""
    assert expressions.MAX_NODES <= expressions.MAX_STEPS
    with pytest.raises(ExpressionError, match="more than 400 parts"):
        compile_expression("+".join(["1"] * 401), ROOTS)


def test_the_reference_evaluator_keeps_to_its_step_budget(monkeypatch):
    compiled = compile_expression(" + ".join(["params.n"] * 40), ROOTS)  # 119 steps
    assert compiled.evaluate_reference(CONTEXT, now=NOW) == 0
    monkeypatch.setattr(expressions, "MAX_STEPS", 100)
    with pytest.raises(ExpressionRuntimeError, match="budget of 100 steps"):
        compiled.evaluate_reference(CONTEXT, now=NOW)


def test_the_work_budget_stops_slow_work():
    """30 renderings of a 15,000-item list: each allowed, together over the budget."""
    context = {**CONTEXT, "params": {"items": list(range(15_000))}}
    compiled = compile_expression(" + ".join(["len(str(params.items))"] * 30), ROOTS)
    started = time.thread_time()
    with pytest.raises(ExpressionRuntimeError, match="work budget of 1,000,000"):
        compiled.evaluate(context, now=NOW)
    assert time.thread_time() - started < LIMIT_SECONDS
    fewer = compile_expression(" + ".join(["len(str(params.items))"] * 3), ROOTS)
    assert fewer.evaluate(context, now=NOW) == 3 * len(str(list(range(15_000))))


@pytest.mark.parametrize("term", ["max([params.n] * 49_999)", "min([params.n] * 49_999)",
                                  "len(str(params.items))", "len(lower(message.text * 49_999))",
                                  "len(params.items + params.items)"])
def test_an_evaluation_within_the_work_budget_takes_at_most_about_25_ms(term):
    """As many terms as the work budget allows: the costliest evaluation a rule can make."""
    context = {**CONTEXT, "params": {**CONTEXT["params"], "items": list(range(15_000))}}
    terms = 1
    while True:  # the most terms that still evaluate
        compiled = compile_expression(" + ".join([term] * (terms + 1)), ROOTS)
        try:
            compiled.evaluate(context, now=NOW)
        except ExpressionRuntimeError:
            break
        terms += 1
    compiled = compile_expression(" + ".join([term] * terms), ROOTS)
    best = min(_cpu_seconds(lambda: compiled.evaluate(context, now=NOW)) for _ in range(3))
    assert best < LIMIT_SECONDS, f"{terms} terms of {term}: {best * 1000:.0f} ms"


def _cpu_seconds(work) -> float:
    started = time.thread_time()
    work()
    return time.thread_time() - started


def test_the_reference_evaluator_keeps_to_its_time_budget(monkeypatch):
    monkeypatch.setattr(expressions, "MAX_EVALUATION_SECONDS", 0.003)
    context = {**CONTEXT, "params": {"items": list(range(15_000))}}
    compiled = compile_expression(" + ".join(["len(str(params.items))"] * 30), ROOTS)
    with pytest.raises(ExpressionRuntimeError, match="time budget of 3 ms"):
        compiled.evaluate_reference(context, now=NOW)


def test_the_trace_preview_is_bounded_before_it_is_built():
    shared = ["x" * 1000] * 100
    huge = [shared] * 10_000  # 10^9 characters if rendered whole
    started = time.thread_time()
    text = preview(huge)
    assert time.thread_time() - started < 0.01 and len(text) <= 80
    assert preview(10**5000) == "<an integer of 16610 bits>"


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
    # this thread's CPU only (other tests' server threads may still run), and no collection
    # of the whole test process's heap counted against the expression
    gc.disable()
    started = time.thread_time()
    try:
        compiled = compile_expression(source, ROOTS)
        compiled.evaluate(CONTEXT, now=NOW)
    except (ExpressionError, ExpressionRuntimeError):
        pass
    finally:
        seconds = time.thread_time() - started
        gc.enable()
    assert seconds < 0.25  # compile (with folding) plus evaluate


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_each_kind_of_nesting_compiles_and_agrees_up_to_the_bound_and_is_refused_past_it(wrapper):
    source = "params.n"  # two levels, read from the event (a constant would be folded)
    for _ in range(MAX_NESTING - 2):
        source = wrapper.format(source)
    compiled = compile_expression(source, ROOTS)  # neither Python's parser nor a recursion limit
    outcomes = []
    for evaluate in (compiled.evaluate, compiled.evaluate_reference):
        try:
            outcomes.append(("value", evaluate(CONTEXT, now=NOW)))
        except ExpressionRuntimeError:
            outcomes.append(("refused", None))
    assert outcomes[0] == outcomes[1]
    with pytest.raises(ExpressionError, match=f"nested more than {MAX_NESTING} levels deep"):
        compile_expression(wrapper.format(source), ROOTS)


def test_brackets_past_pythons_own_limit_are_refused_as_too_deep():
    with pytest.raises(ExpressionError, match=f"nested more than {MAX_NESTING}") as caught:
        compile_expression("(" * 250 + "1" + ")" * 250, ROOTS)
    assert caught.value.column == 201  # the bracket Python's parser stops at


# Expressions nested past the bound, as the attacks wrote them; each once refused
# only with a traceback (the compiled source's "too many nested parentheses") or not at all.
DEEP = ["not " * 150 + "params.n", "-" * 199 + "1", "1/" * 130 + "1", "[" * 150 + "1" + "]" * 150,
        "abs(" * 120 + "1" + ")" * 120, "params" + ".a" * 190, "1 if 1 else " * 130 + "1",
        "(" * 250 + "1" + ")" * 250]


def rule_file(tmp_path, expression):
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: attack\n    trigger: {event: message.received}\n"
        f"    conditions: [{json.dumps(expression)}]\n    actions: [{{add_tag: {{tag: x}}}}]\n",
        "utf-8")
    return tmp_path


@pytest.mark.parametrize("source", DEEP + [constant for constant, _ in ATTACKS],
                         ids=lambda source: source[:40])
def test_validation_refuses_each_attack_with_a_located_error_within_a_second(tmp_path, source):
    outcome, seconds, peak = measured(lambda: load_rule_set([rule_file(tmp_path, source)]))
    assert isinstance(outcome, RuleSetInvalid) and seconds < 1 and peak < LIMIT_BYTES
    [error] = outcome.errors
    assert (error.file, error.line, error.column, error.rule_id, error.path) == (
        str(tmp_path / "r.yaml"), 4, 18, "attack", "conditions/0")
    assert "nested more than 50 levels" in error.message or "always fails" in error.message


def test_the_validate_command_prints_no_traceback_and_stays_small(tmp_path):
    rules = "".join(
        f"  - id: attack-{index}\n    trigger: {{event: message.received}}\n"
        f"    conditions: [{json.dumps(source)}]\n    actions: [{{add_tag: {{tag: x}}}}]\n"
        for index, source in enumerate(DEEP + [constant for constant, _ in ATTACKS]))
    (tmp_path / "r.yaml").write_text("rules:\n" + rules, "utf-8")
    # the peak resident memory of this process's own image (ru_maxrss keeps the forking
    # test runner's), and its CPU time
    script = ("import re, sys, time; from pathlib import Path; from rules_engine.cli import main\n"
              "code = main(sys.argv[1:])\n"
              "peak = re.search(r'VmHWM:\\s*(\\d+)', Path('/proc/self/status').read_text())[1]\n"
              "print('CPU', time.process_time(), 'KB', peak)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, "validate", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.count("[attack-") == len(DEEP) + len(ATTACKS)
    cpu, kilobytes = done.stdout.rsplit("CPU ", 1)[1].split(" KB ")
    assert float(cpu) < 10 and int(kilobytes) < 200_000  # startup included


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(nested(["channel", "params", "1", "b'x'", "'%s'"],
              st.integers(MAX_NESTING - 8, MAX_NESTING + 40)))
def test_any_nested_expression_is_refused_past_the_bound_or_evaluated(case):
    source, depth = case
    try:
        compiled = compile_expression(source, ROOTS)
    except ExpressionError as refusal:  # too deep, or a constant that always fails
        assert (f"more than {MAX_NESTING} levels" in refusal.message) == (depth > MAX_NESTING)
        return
    assert depth <= MAX_NESTING
    for evaluate in (compiled.evaluate, compiled.evaluate_reference):
        with contextlib.suppress(ExpressionRuntimeError):
            evaluate(CONTEXT, now=NOW)


def test_int_reads_no_text_longer_than_the_largest_integer():
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # the interpreter's own limit off: ours still holds
    try:
        compiled = compile_expression("int(message.text * 99999)", ROOTS)
        started = time.thread_time()
        with pytest.raises(ExpressionRuntimeError, match="int\\(\\) of a text over 1,234"):
            compiled.evaluate({**CONTEXT, "message": {"text": "9"}}, now=NOW)
        assert time.thread_time() - started < LIMIT_SECONDS
    finally:
        sys.set_int_max_str_digits(before)  # as other tests (the fuzzer's) left it
    assert compile_expression("int(message.text * 1233)", ROOTS).evaluate(
        {**CONTEXT, "message": {"text": "9"}}, now=NOW) == 10**1233 - 1


@settings(max_examples=500, deadline=None, derandomize=True)
@given(format_templates(), st.sampled_from([(), (7,), (-2.5, "ab"), ("x", 10**40, 3),
                                            {"a": "xyz", "(a)": 1}, {"a": 12345}]))
def test_the_formatted_size_is_never_below_the_text_made(template, arguments):
    for form in (template, template.encode()):
        args = ({key.encode() if isinstance(form, bytes) else key: value
                 for key, value in arguments.items()} if isinstance(arguments, dict) else arguments)
        try:
            size = formatted_size(form, args)
        except ExpressionRuntimeError:
            continue
        try:
            made = form % args
        except (TypeError, ValueError, KeyError, OverflowError):
            continue
        assert len(made) <= size, (form, args)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                    | st.text(st.characters(codec="ascii", exclude_characters="'\"\\\x7f"),
                              max_size=8).filter(str.isprintable) | st.binary(max_size=4)
                    .map(lambda b: b.replace(b"\\", b"").replace(b"'", b"")).filter(
                        lambda b: all(32 <= c < 127 for c in b)),
                    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner)
                    | st.dictionaries(st.text(max_size=3).filter(str.isalnum), inner, max_size=3),
                    max_leaves=12))
def test_the_rendered_size_is_never_below_the_text_made(value):
    assert len(str(value)) <= rendered_size(value, limit=10**9)


def test_str_checks_the_escapes_of_the_text_it_made():
    """30,000 NULs count 30,000 characters before rendering, and render as 120,000."""
    compiled = compile_expression("str([message.text * 30000])", ROOTS)
    with pytest.raises(ExpressionRuntimeError, match="larger than 100000"):
        compiled.evaluate({**CONTEXT, "message": {"text": "\x00"}}, now=NOW)


def test_a_template_is_bounded_before_it_is_made():
    started = time.thread_time()
    for template in ({"a": "{{ message.text * 60000 }}", "b": "{{ message.text * 60000 }}"},
                     "{{ message.text * 60000 }} and {{ message.text * 60000 }}",
                     "{{ [params.big ** 137] * 49999 }}", "x{{ [params.big ** 137] * 49999 }}"):
        with pytest.raises(ExpressionRuntimeError, match=str(MAX_VALUE_SIZE)):
            compile_template(template, ROOTS).render(CONTEXT, now=NOW)
    assert time.thread_time() - started < LIMIT_SECONDS * 4


def test_a_value_json_cannot_hold_fails_the_action_not_the_event(make_engine, store):
    engine = make_engine("""
        rules:
          - id: post
            trigger: {event: message.received}
            actions:
              - http_request: {url: "https://crm.example.com/x", body: {v: "{{ b'x' }}"}}
              - http_request: {url: "https://crm.example.com/y", body: {v: "{{ {1, 2} }}"}}
              - add_tag: {tag: done}
    """)
    result = engine.process(message("psid-1", "hi"))
    actions = result.trace["steps"][0]["rules"][0]["actions"]
    assert [action["outcome"] for action in actions] == ["error", "error", "applied"]
    assert all("not a JSON value" in action["detail"] for action in actions[:2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(min_value=-(2**4096) + 1, max_value=2**4096 - 1),
                          st.text(max_size=20), st.binary(max_size=20), st.none(),
                          st.booleans(), st.floats(allow_nan=False)), max_size=50))
def test_plain_collections_weigh_the_same_at_once_as_item_by_item(items):
    """The fast path for collections of plain values gives exactly the per-item sums."""
    kinds = set(map(type, items))
    assert expressions._lengths(items, kinds) == sum(map(expressions._length, items))
    assert expressions._rendered_lengths(items, kinds) == \
        sum(map(expressions._rendered_length, items))
