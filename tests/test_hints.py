"""Every hint is a working fix: each mistake below is validated, the fix its hint gives is
taken from the hint's text (never from this file) and applied, and then the rules validate
and run an event without an error.

The mistakes cover each kind of hint the validator gives about a rule: a name near a known
one (field, function, action, key, value), an expression rewritten whole (a function used
as a value, a method or keyword call, an infix ``contains``, operators and comparisons
between kinds that never meet, a boolean compared with a text, Dialogflow's text
booleans), an example to copy (arity, argument kinds), and an action written as its bare
name or its one value without its key.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from rules_engine import Engine, RuleSetInvalid, load_rule_set, parse_event
from rules_engine.domain.errors import RulesEngineError

HOURS = """business_hours:
  timezone: Europe/Berlin
  weekly: {mon: ["09:00-17:00"], tue: ["09:00-17:00"]}
"""
EVENTS = {
    "message.received": {"type": "message.received", "channel": "facebook",
                         "contact": {"external_id": "psid-1"},
                         "message": {"text": "I want a refund, please"}},
    "dialogflow.fulfillment": {"type": "dialogflow.fulfillment", "channel": "dialogflow",
                               "contact": {"external_id": "session-1"},
                               "params": {"RB_MARKDONE": "true"}},
}

# (trigger, what is broken, the mistake): a condition's expression, or an action item
MISTAKES = [
    ("message.received", "condition", "not in_business_hours"),
    ("message.received", "condition", "message.text contains 'refund'"),
    ("message.received", "condition", "message.body == 'hi'"),
    ("message.received", "condition", "conversation.state == 'open'"),
    ("message.received", "condition", "lowercase(message.text) == 'hi'"),
    ("message.received", "condition", "message.text.lower() == 'hi'"),
    ("message.received", "condition", "round(len(message.text), ndigits=1) > 2"),
    ("message.received", "condition", "len(message.text, 2) > 1"),
    ("message.received", "condition", "lower(contact.tags) == 'x'"),
    ("message.received", "condition", "len(message.text) + 'x' == 'ab'"),
    ("message.received", "condition", "message.text - 1 > 0"),
    ("message.received", "condition", "len(message.text) > 'x'"),
    ("message.received", "condition", "-message.text < 0"),
    ("message.received", "condition", "1 in contact.id"),
    ("message.received", "condition", "contact.id in message.text"),
    ("message.received", "condition", "contains(message.text, contact.id)"),
    ("message.received", "condition", "message.text == true"),
    ("message.received", "condition", "conversation.status == 'opened'"),
    ("dialogflow.fulfillment", "condition", "params.RB_MARKDONE == true"),
    ("dialogflow.fulfillment", "action", "open_conversation"),
    ("message.received", "action", "close_conversation: done"),
    ("message.received", "action", "asign: {team: billing}"),
    ("message.received", "action", "assign: {tem: billing}"),
    ("message.received", "trigger", "message.recieved"),
]


def rule_file(trigger: str, where: str, text: str) -> str:
    condition = json.dumps(text) if where == "condition" else "'true'"
    action = text if where == "action" else "add_tag: {tag: seen}"
    return (f"{HOURS}rules:\n  - id: r\n    trigger: {{event: {text if where == 'trigger' else trigger}}}\n"
            f"    conditions: [{condition}]\n    actions:\n      - {action}\n")


def the_fix(problem: RulesEngineError, broken: str) -> str:
    """What the hint says to write instead of ``broken``: a whole expression or item to
    copy (`...`), or a nearer name for the one the message quotes."""
    hint = problem.hint or ""
    nearer = re.search(r"did you mean `([^`]+)`\?", hint)
    if nearer:
        quoted = re.findall(r"'([^']+)'", problem.message)
        wrong = next(name for name in quoted if name in broken)
        return broken.replace(wrong, nearer[1].rsplit(".", 1)[-1] if "." in wrong
                              and "." not in nearer[1] else nearer[1])
    written = re.search(r"`([^`]+)`", hint)
    assert written, f"the hint gives nothing to write: {problem}"
    return written[1].removeprefix("- ")


def problems_of(path: Path) -> list[RulesEngineError]:
    try:
        rules = load_rule_set(path)
    except RuleSetInvalid as invalid:
        return list(invalid.errors)
    return list(rules.warnings)


@pytest.mark.parametrize("trigger, where, broken", MISTAKES)
def test_each_hint_is_a_fix_that_validates_and_runs(tmp_path, store, trigger, where, broken):
    path = tmp_path / "rules.yaml"
    path.write_text(rule_file(trigger, where, broken), "utf-8")
    found = [p for p in problems_of(path) if p.rule_id == "r"]
    assert found, f"no problem found in {broken!r}"
    fixed = broken
    for problem in found:  # the hints are applied in turn (a fix may uncover the next)
        fixed = the_fix(problem, fixed)
    path.write_text(rule_file(trigger, where, fixed), "utf-8")
    assert problems_of(path) == [], (broken, fixed)
    rules = load_rule_set(path)
    event = parse_event({**EVENTS[trigger if where != "trigger" else "message.received"],
                         "id": "e-1", "timestamp": datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
                         .isoformat()})
    result = Engine(store, rules).process(event)
    assert result.trace is not None
    outcomes = [(rule["result"], rule.get("detail")) for step in result.trace["steps"]
                for rule in step["rules"] if rule["rule_id"] == "r"]
    assert outcomes and all(result != "condition_error" for result, _ in outcomes), (fixed, outcomes)
    assert all(action["outcome"] != "error" for step in result.trace["steps"]
               for rule in step["rules"] for action in rule["actions"]), fixed
