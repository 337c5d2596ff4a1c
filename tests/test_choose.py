"""``choose``: the first branch whose conditions hold runs (else the default), waits inside
branches resume where they were, the trace says which branch ran and why the others did
not, and validation checks every branch."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules_engine import Engine, RuleSetInvalid, load_rule_set
from rules_engine.domain.model import EventType
from rules_engine.domain.timers import Timer
from rules_engine.language.context import roots_for
from rules_engine.rule_tests import run_tests
from rules_engine.rules.actions import compile_action, frames_at, walk
from rules_engine.trace import shapes
from rules_engine.trace.forms import _arguments_at, read_trace
from rules_engine.trace.render import render_trace

from .conftest import T0, message
from .trace.test_trace_shapes import as_json, mismatches

BY_LANGUAGE = """
rules:
  - id: greet
    trigger: {event: message.received}
    actions:
      - choose:
          branches:
            - conditions: "'vip' in contact.tags"
              actions: [{add_tag: vip-greeted}]
            - conditions: ["'lang' in contact.fields", "contact.fields.lang == 'fr'"]
              actions: [{add_tag: bonjour}, {add_tag: fr}]
            - conditions: {any: ["'lang' in contact.fields", "message.text == 'hallo'"]}
              actions: [{add_tag: other-language}]
          default: [{add_tag: hello}]
      - add_tag: greeted
"""


def tags_of(engine: Engine, external_id: str) -> list[str]:
    with engine.store.read() as tx:
        contact = tx.find_contact_by_identity("facebook", external_id)
        assert contact is not None
        return tx.tags(contact.id)


def set_field(engine: Engine, external_id: str, name: str, value: Any) -> None:
    """A Facebook contact with one field set, before any event."""
    with engine.store.transaction() as tx:
        contact, _ = tx.create_contact(name=None, created_at=T0, channel="facebook",
                                       external_id=external_id)
        tx.set_field(contact.id, name, value)


def rule_entry(result: Any, rule_id: str) -> Any:
    return next(rule for step in result.trace["steps"] for rule in step["rules"]
                if rule["rule_id"] == rule_id)


def test_the_first_branch_that_holds_runs_and_the_later_ones_are_not_tried(make_engine):
    engine = make_engine(BY_LANGUAGE)
    set_field(engine, "fr-1", "lang", "fr")
    result = engine.process(message("fr-1", "bonjour", minutes=1))
    assert tags_of(engine, "fr-1") == ["bonjour", "fr", "greeted"]  # not other-language
    entry = rule_entry(result, "greet")
    choose, *ran = entry["actions"]
    assert choose["action"] == "choose" and choose["branch"] == 1
    assert choose["outcome"] == "chosen"
    assert choose["detail"] == "branch 1 ran; branch 0 false; branch 2 not tried"
    assert [(line["path"], line["action"]) for line in ran] == [
        ("actions/0/choose/branches/1/actions/0", "add_tag"),
        ("actions/0/choose/branches/1/actions/1", "add_tag"),
        ("actions/1", "add_tag")]
    assert ran[0]["args"] == {"tag": "bonjour"} and ran[2]["args"] == {"tag": "greeted"}
    assert [(c["path"], c["expr"], c["result"]) for c in entry["conditions"]] == [
        ("actions/0/choose/branches/0/conditions", "'vip' in contact.tags", False),
        ("actions/0/choose/branches/1/conditions/0", "'lang' in contact.fields", True),
        ("actions/0/choose/branches/1/conditions/1", "contact.fields.lang == 'fr'", True)]


def test_the_default_runs_when_no_branch_holds_and_nothing_when_there_is_none(make_engine):
    engine = make_engine(BY_LANGUAGE)
    result = engine.process(message("en-1", "hi"))
    assert tags_of(engine, "en-1") == ["greeted", "hello"]
    choose = rule_entry(result, "greet")["actions"][0]
    assert choose["branch"] == "default"
    assert choose["detail"] == "default ran; branch 0 false; branch 1 false; branch 2 false"

    engine = make_engine(BY_LANGUAGE.replace("          default: [{add_tag: hello}]\n", ""))
    result = engine.process(message("en-2", "hi"))
    assert tags_of(engine, "en-2") == ["greeted"]
    choose = rule_entry(result, "greet")["actions"][0]
    assert choose["outcome"] == "noop" and "branch" not in choose
    assert choose["detail"].startswith("no branch held and there is no default")


def test_a_branch_condition_that_fails_counts_as_false_and_says_why(make_engine):
    engine = make_engine(BY_LANGUAGE.replace("\"'vip' in contact.tags\"",
                                             "\"contact.fields.tier == 'gold'\""))
    result = engine.process(message("err-1", "hi"))
    assert tags_of(engine, "err-1") == ["greeted", "hello"]
    entry = rule_entry(result, "greet")
    assert result.fired == ["greet"] and entry["result"] == "fired"
    assert entry["actions"][0]["detail"].startswith(
        "default ran; branch 0 failed, counted false: no field 'tier'; branch 1 false")
    assert entry["conditions"][0]["error"] == "no field 'tier'"


NESTED_WAIT = """
rules:
  - id: follow-up
    trigger: {event: message.received}
    actions:
      - add_tag: asked
      - choose:
          branches:
            - conditions: "contains(message.text, 'order')"
              actions:
                - choose:
                    branches:
                      - conditions: "'vip' in contact.tags"
                        actions: [{add_tag: vip-order}]
                    default:
                      - add_tag: order
                      - wait: {for: 2h, if: "conversation.is_open"}
                      - add_tag: order-followed-up
                - add_tag: order-done
          default: [{add_tag: other}]
      - add_tag: done
"""


def test_a_wait_inside_nested_branches_resumes_there_then_goes_on_after_each_choose(
        make_engine, store):
    engine = make_engine(NESTED_WAIT)
    first = engine.process(message("w-1", "where is my order?"))
    assert tags_of(engine, "w-1") == ["asked", "order"]  # the rest waits
    with store.read() as tx:
        [timer] = tx.timers()
    assert timer.payload["resume"] == (
        "actions/1/choose/branches/0/actions/0/choose/default/2")
    lines = rule_entry(first, "follow-up")["actions"]
    assert [line["path"] for line in lines][-1] == (
        "actions/1/choose/branches/0/actions/0/choose/default/1")
    assert list(engine.fire_all_due(T0 + timedelta(hours=1, minutes=59))) == []
    [(_, resumed)] = list(engine.fire_all_due(T0 + timedelta(hours=2)))
    entry = rule_entry(resumed, "follow-up")
    assert entry["result"] == "resumed" and resumed.fired == ["follow-up"]
    assert [line["path"] for line in entry["actions"]] == [
        "actions/1/choose/branches/0/actions/0/choose/default/2",
        "actions/1/choose/branches/0/actions/1",
        "actions/2"]
    assert entry["conditions"][0]["path"] == (
        "actions/1/choose/branches/0/actions/0/choose/default/1/wait/if")
    assert entry["conditions"][0]["expr"] == "conversation.is_open"
    assert tags_of(engine, "w-1") == ["asked", "done", "order", "order-done", "order-followed-up"]
    problems: list[str] = []
    for result in (first, resumed):
        assert result.stored_trace is not None and result.trace is not None
        problems += mismatches(as_json(result.stored_trace), shapes.StoredTrace, result.event_id)
        problems += mismatches(as_json(result.trace), shapes.Trace, result.event_id)
        with store.read() as tx:
            assert read_trace(tx, result.event_id) == result.trace
    assert problems == []


def test_a_timer_written_before_branches_with_an_integer_resume_still_fires(make_engine,
                                                                            store):
    engine = make_engine("""
rules:
  - id: nudge
    trigger: {event: message.received}
    actions: [{add_tag: asked}, {wait: 2h}, {add_tag: nudged}]
""")
    contact_id = engine.process(message("old-1", "hi")).contact_id
    assert contact_id is not None
    with store.transaction() as tx:
        [written] = tx.timers()
        tx.delete_timer(written)
        tx.set_timers([Timer("wait:old", "wait", contact_id, written.conversation_id, "nudge",
                             written.due_at, "x", {**written.payload, "resume": 2})])
    [(_, resumed)] = list(engine.fire_all_due(T0 + timedelta(hours=2)))
    entry = rule_entry(resumed, "nudge")
    assert entry["result"] == "resumed"
    assert [line["path"] for line in entry["actions"]] == ["actions/2"]
    assert tags_of(engine, "old-1") == ["asked", "nudged"]


def test_changing_an_action_inside_a_branch_drops_the_waits_of_the_rule(make_engine,
                                                                       write_rules):
    engine = make_engine(NESTED_WAIT)
    before = engine.rules.get("follow-up")
    engine.process(message("w-2", "my order"))
    changed = load_rule_set([write_rules(NESTED_WAIT.replace("vip-order", "vip-orders"))])
    assert before is not None and changed.get("follow-up").digest != before.digest
    engine.replace_rules(changed)
    [(_, resumed)] = list(engine.fire_all_due(T0 + timedelta(hours=2)))
    entry = rule_entry(resumed, "follow-up")
    assert entry["result"] == "wait_dropped" and "changed" in entry["detail"]


def test_explain_shows_each_branch_condition_under_its_choose(tmp_path, store, database_url):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(BY_LANGUAGE, "utf-8")
    Engine(store, load_rule_set([rules_dir])).process(message("ex-1", "hallo", id="evt-choose"))
    done = subprocess.run([sys.executable, "-m", "rules_engine.cli", "--rules", str(rules_dir),
                           "--database-url", database_url, "explain", "evt-choose"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "actions/0 choose:" in line)
    assert lines[at].strip() == (
        "actions/0 choose: chosen (branch 2 ran; branch 0 false; branch 1 false)")
    assert [line.strip() for line in lines[at + 1:at + 5]] == [
        "actions/0/choose/branches/0/conditions: 'vip' in contact.tags  -> false",
        "actions/0/choose/branches/1/conditions/0: 'lang' in contact.fields  -> false",
        "actions/0/choose/branches/2/conditions/any/0: 'lang' in contact.fields  -> false",
        "actions/0/choose/branches/2/conditions/any/1: message.text == 'hallo'  -> true"]
    assert lines[at + 5].strip().startswith(
        "actions/0/choose/branches/2/actions/0 add_tag: applied")
    done = subprocess.run([sys.executable, "-m", "rules_engine.cli", "--database-url",
                           database_url, "explain", "evt-choose", "--format", "json"],
                          capture_output=True, text=True, check=True)
    [greet] = json.loads(done.stdout)["steps"][0]["rules"]
    assert greet["actions"][0]["branch"] == 2


# -- validation ---------------------------------------------------------------------------

def rules_with(actions: str) -> str:
    return ("rules:\n  - id: r\n    trigger: {event: message.received}\n    actions:\n"
            + textwrap.indent(textwrap.dedent(actions), "      "))


@pytest.mark.parametrize(("actions", "line", "path", "message", "hint"), [
    ("- choose: {branches: []}\n", 5, "actions/0/choose/branches",
     "a choose with no branches", "add a branch"),
    ("""\
     - choose:
         branches:
           - {conditions: "message.text == 'a'", actions: []}
     """, 7, "actions/0/choose/branches/0/actions", "branch 0 has no actions", "drop the branch"),
    ("""\
     - choose:
         branches: [{conditions: "message.text == 'a'", actions: [{add_tag: a}]}]
         default: []
     """, 7, "actions/0/choose/default", "the default has no actions", "drop `default:`"),
    ("""\
     - choose:
         branches: [{conditions: "message.txt == 'a'", actions: [{add_tag: a}]}]
     """, 6, "actions/0/choose/branches/0/conditions", "unknown field 'message.txt'",
     "did you mean `message.text`?"),
    ("""\
     - choose:
         branches:
           - conditions: {all: [true, "len(message.text) + 'x'"]}
             actions: [{add_tag: a}]
     """, 7, "actions/0/choose/branches/0/conditions/all/1", "fails whenever it runs",
     "str(len(message.text)) + 'x'"),
    ("""\
     - choose:
         branches: [{conditions: "true", actions: [{add_tag: {tag: "a b"}}]}]
     """, 6, "actions/0/choose/branches/0/actions/0/add_tag/tag", "is not a valid tag", None),
    ("""\
     - choose:
         - {conditions: "true", actions: [{add_tag: a}]}
         - {default: [{add_tag: b}]}
     """, 6, "actions/0/choose", "not a list", "the branches go under `branches:`"),
    ("""\
     - choose:
         branches:
           - {conditions: "true", actions: [{add_tag: a}]}
           - {default: [{add_tag: b}]}
     """, 8, "actions/0/choose/branches/1/default", "unknown key 'default'",
     "the default beside them"),
])
def test_a_broken_choose_is_an_error_at_its_place_with_a_hint(write_rules, actions, line,
                                                              path, message, hint):
    with pytest.raises(RuleSetInvalid) as raised:
        load_rule_set([write_rules(rules_with(actions))])
    found = [e for e in raised.value.errors if e.path == path]
    assert found, [str(e) for e in raised.value.errors]
    assert message in found[0].message and found[0].line == line and found[0].rule_id == "r"
    assert hint is None or hint in (found[0].hint or "")


def test_every_problem_in_every_branch_is_reported_at_once(write_rules):
    with pytest.raises(RuleSetInvalid) as raised:
        load_rule_set([write_rules(rules_with("""\
            - choose:
                branches:
                  - {conditions: "message.txt == 'a'", actions: [{add_tag: a}]}
                  - {conditions: "true", actions: []}
                default: [{set_field: {name: x, expr: "lower(contact.tags)"}}]
            """))])
    assert sorted(e.path or "" for e in raised.value.errors) == [
        "actions/0/choose/branches/0/conditions", "actions/0/choose/branches/1/actions",
        "actions/0/choose/default/0/set_field/expr"]


def nested(depth: int) -> str:
    """A choose nested ``depth`` deep."""
    inner = "[{add_tag: deep}]"
    for _ in range(depth):
        inner = f"[{{choose: {{branches: [{{conditions: \"message.text == 'a'\", actions: {inner}}}]}}}}]"
    return f"- {inner[1:-1]}\n"


def test_a_choose_nests_at_most_three_deep(write_rules):
    assert load_rule_set([write_rules(rules_with(nested(3)))])
    with pytest.raises(RuleSetInvalid) as raised:
        load_rule_set([write_rules(rules_with(nested(4)))])
    [error] = raised.value.errors
    assert error.message == "choose is nested 4 deep; at most 3"
    assert error.path == "actions/0/choose/branches" and error.hint


def test_branches_that_never_run_are_warnings(write_rules):
    rules = load_rule_set([write_rules(rules_with("""\
        - choose:
            branches:
              - {conditions: "message.text == true", actions: [{add_tag: a}]}
              - {conditions: false, actions: [{add_tag: b}]}
              - {conditions: ["true", "1 < 2"], actions: [{add_tag: c}]}
              - {conditions: "message.text == 'x'", actions: [{add_tag: d}]}
            default: [{add_tag: e}]
        """))])
    found = {warning.path: warning.message for warning in rules.warnings}
    assert found == {
        "actions/0/choose/branches/0/conditions": "'message.text == true' is never true: "
                                                  "text never equals boolean (at character 1 "
                                                  "of the expression)",
        "actions/0/choose/branches/1/conditions": "branch 1 never runs: its conditions are "
                                                  "always false",
        "actions/0/choose/branches/2": "what follows branch 2 never runs (its conditions "
                                       "always hold): branch 3, the default"}


def test_what_branches_do_counts_for_the_static_checks(write_rules):
    rules = load_rule_set([write_rules("""
rules:
  - id: tagger
    trigger: {event: message.received}
    actions:
      - choose:
          branches: [{conditions: "message.text == 'vip'", actions: [{add_tag: vip}]}]
  - id: on-the-tag
    trigger: {event: contact.tag_added}
    conditions: ["params.tag == 'VIP'"]
    actions: [{add_tag: seen}]
""")])
    messages = [warning.message for warning in rules.warnings]
    assert not any("nothing emits" in text for text in messages)  # the branch emits it
    assert any("'VIP' is never a tag the rules add: they add 'vip'" in text for text in messages)


def test_validate_names_a_choose_with_no_branches_and_exits_1(write_rules):
    directory = write_rules(rules_with("- choose: {branches: []}\n"))
    done = subprocess.run([sys.executable, "-m", "rules_engine.cli", "validate", str(directory)],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "[r] actions/0/choose/branches: a choose with no branches" in done.stdout + done.stderr


# -- paths inside branches ----------------------------------------------------------------

LEAVES = st.sampled_from([{"add_tag": "a"}, {"wait": "1h"}, {"add_tag": ["b", "c"]},
                          {"send_message": {"text": "hi {{ contact.name }}"}}])


def _choose(children: st.SearchStrategy[list[dict[str, Any]]]) -> st.SearchStrategy[dict[str, Any]]:
    branch = st.fixed_dictionaries({"conditions": st.just("message.text == 'x'"),
                                    "actions": children})
    return st.fixed_dictionaries({"branches": st.lists(branch, min_size=1, max_size=3)},
                                 optional={"default": children}).map(lambda c: {"choose": c})


def _actions(depth: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    if depth == 0:
        return st.lists(LEAVES, min_size=1, max_size=3)
    return st.lists(st.one_of(LEAVES, _choose(_actions(depth - 1))), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(raw=_actions(3), noise=st.text(alphabet="actions/choe0123bdfult", max_size=60))
def test_every_path_inside_branches_leads_back_to_its_action(raw, noise):
    roots = roots_for(EventType.MESSAGE_RECEIVED)
    actions = tuple(compile_action(*item.popitem(), roots, f"actions/{index}")
                    for index, item in enumerate(json.loads(json.dumps(raw))))
    catalog = [action.shown_arguments() for action in actions]
    for path, action in walk(actions):
        frames = frames_at(actions, path)
        assert frames is not None
        inner = frames[0]
        assert inner.actions[inner.start] is action and f"{inner.base}/{inner.start}" == path
        assert [frame.base.count("/choose/") for frame in frames] == list(
            range(path.count("/choose/"), -1, -1))
        assert _arguments_at(catalog, path) == action.shown_arguments()
        end = f"{inner.base}/{len(inner.actions)}"  # after a sequence's last action
        assert frames_at(actions, end) is not None
    assert frames_at(actions, noise) is None or noise.startswith("actions/")


# -- the rule reference's example -----------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def _docs_block(containing: str) -> str:
    """The code block of docs/rules.md that holds ``containing`` (without its fences)."""
    blocks = (REPO / "docs" / "rules.md").read_text().split("```")[1::2]
    return next(block.split("\n", 1)[1].rstrip("\n") for block in blocks if containing in block)


def test_the_rule_references_choose_is_the_example_rules():
    example = (REPO / "rules" / "branches.yaml").read_text()
    block = _docs_block("- choose:")
    for line in block.splitlines():
        assert line.split("  #")[0].rstrip() in example, line


def test_the_rule_references_trace_is_what_explain_prints(store, monkeypatch):
    monkeypatch.chdir(REPO)  # the rules named as the docs name them
    engine = Engine(store, load_rule_set(["rules"]))
    with store.transaction() as tx:
        contact, _ = tx.create_contact(name=None, created_at=T0, channel="telegram",
                                       external_id="tg-fr")
        tx.set_field(contact.id, "language", "fr")
    result = engine.process(message("tg-fr", "aide", channel="telegram"))
    assert result.trace is not None
    shown = render_trace(result.trace).splitlines()
    start = next(i for i, line in enumerate(shown) if "[FIRED] answer-help-in-their-language" in line)
    expected = _docs_block("actions/0 choose:").splitlines()
    assert len(shown) > start + len(expected)
    for wanted, line in zip(expected, shown[start:], strict=False):
        assert line.startswith(wanted.removesuffix("...)")), (wanted, line)


def test_a_rule_test_naming_another_branch_fails(tmp_path):
    case = tmp_path / "tests" / "branch.yaml"
    case.parent.mkdir()
    case.write_text(textwrap.dedent("""
        tests:
          - name: the French branch
            given:
              contacts:
                - {ref: en, channel: telegram, external_id: tg-en, fields: {language: en}}
            events:
              - {type: message.received, contact: en, text: "help"}
            expect:
              actions:
                - {rule: answer-help-in-their-language, action: choose, branch: 1}
    """), "utf-8")
    [failed] = run_tests(load_rule_set([REPO / "rules"]), [case])
    assert not failed.passed
    [(what, _, actual)] = failed.failures
    assert what == "actions"
    assert [(ran["path"], ran["branch"]) for ran in actual
            if ran["action"] == "choose"] == [("actions/0", "default")]


def test_a_team_named_inside_a_branch_is_checked_like_any_other(write_rules):
    with pytest.raises(RuleSetInvalid) as raised:
        load_rule_set([write_rules("teams: [support]\n" + rules_with("""\
            - choose:
                branches:
                  - conditions: "message.text == 'a'"
                    actions: [{assign: {team: suport, strategy: round_robin}}]
            """))])
    [error] = raised.value.errors
    assert error.path == "actions/0/choose/branches/0/actions/0/assign/team"
    assert error.message == "unknown team 'suport'" and error.line == 9
    assert error.hint == "did you mean `support`?"
