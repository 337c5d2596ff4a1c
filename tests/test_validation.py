"""Validation a person can act on: every broken file names file, line, column, rule id and a hint."""
from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from rules_engine import RuleFileError, RuleSetInvalid, load_rule_set
from rules_engine.cli import main
from rules_engine.domain.model import CUSTOM_NAME, TRIGGER_TYPES, CustomEventType
from rules_engine.formats.schema import load_schema, rules_schema
from rules_engine.rules.actions import ACTIONS

REPO = Path(__file__).resolve().parent.parent

GOOD_RULE = """\
  - id: ok
    trigger: {event: message.received}
    actions: [{add_tag: {tag: x}}]
"""

# an http_request with headers, its last header on line 8 (a case adds line 9)
HEADERS = ("rules:\n  - id: a\n    trigger: {event: message.received}\n    actions:\n"
           "      - http_request:\n          url: https://crm.example.com/t\n          headers:\n"
           "            X-Source: rules\n")

# (name, file text, expected line, rule id, fragment of the message, fragment of the hint)
BROKEN = [
    ("yaml-indentation", "rules:\n  - id: a\n   trigger: {event: welcome}\n", 3, None,
     "YAML syntax error", "indentation"),
    ("yaml-unclosed-flow", "rules:\n  - id: a\n    trigger: {event: welcome\n    actions: []\n", 3,
     None, "YAML syntax error", None),
    ("duplicate-yaml-key", "rules:\n  - id: a\n    id: b\n    trigger: {event: welcome}\n"
     "    actions: [{add_tag: {tag: x}}]\n", 3, None, "duplicate key 'id'", None),
    ("not-a-mapping", "- id: a\n", 1, None, "not a bare list", None),
    ("unknown-top-level-key", "rule:\n" + GOOD_RULE, 1, None, "unknown key 'rule'", "`rules`"),
    ("missing-trigger", "rules:\n  - id: a\n    actions: [{add_tag: {tag: x}}]\n", 2, "a",
     "missing required key 'trigger'", "add `trigger"),
    ("missing-actions", "rules:\n  - id: a\n    trigger: {event: welcome}\n", 2, "a",
     "missing required key 'actions'", None),
    ("unknown-rule-key", "rules:\n  - id: a\n    trigger: {event: welcome}\n"
     "    actions: [{add_tag: {tag: x}}]\n    priorty: 3\n", 5, "a", "unknown key 'priorty'",
     "`priority`"),
    ("priority-not-a-number", "rules:\n  - id: a\n    trigger: {event: welcome}\n"
     "    actions: [{add_tag: {tag: x}}]\n    priority: high\n", 5, "a",
     "expected a whole number, got text", None),
    ("enabled-not-boolean", "rules:\n  - id: a\n    enabled: sometimes\n"
     "    trigger: {event: welcome}\n    actions: [{add_tag: {tag: x}}]\n", 3, "a",
     "expected true or false", None),
    ("bad-rule-id", "rules:\n  - id: Close On Thanks\n    trigger: {event: welcome}\n"
     "    actions: [{add_tag: {tag: x}}]\n", 2, "Close On Thanks", "is not a valid id",
     "lower-case"),
    ("unknown-trigger-event", "rules:\n  - id: a\n    trigger: {event: message.recieved}\n"
     "    actions: [{add_tag: {tag: x}}]\n", 3, "a", "unknown trigger event 'message.recieved'",
     "`message.received`"),
    ("command-is-not-a-trigger", "rules:\n  - id: a\n    trigger: {event: conversation.open}\n"
     "    actions: [{add_tag: {tag: x}}]\n", 3, "a", "unknown trigger event 'conversation.open'",
     "`conversation.opened`"),
    ("channels-not-a-list", "rules:\n  - id: a\n    trigger: {event: welcome, channels: facebook}\n"
     "    actions: [{add_tag: {tag: x}}]\n", 3, "a", "expected a list, got text", None),
    ("unknown-action", "rules:\n  - id: a\n    trigger: {event: welcome}\n    actions:\n"
     "      - assing: {user: susan}\n", 5, "a", "unknown action 'assing'", "`assign`"),
    ("two-actions-in-one-item", "rules:\n  - id: a\n    trigger: {event: welcome}\n    actions:\n"
     "      - assign: {user: susan}\n        add_tag: {tag: x}\n", 5, "a",
     "exactly one action name", None),
    ("bad-action-argument", "rules:\n  - id: a\n    trigger: {event: welcome}\n    actions:\n"
     "      - assign: {usr: susan}\n", 5, "a", "unknown key 'usr'", "`user`"),
    ("bot-status-not-a-status", "rules:\n  - id: a\n    trigger: {event: welcome}\n"
     "    actions:\n      - set_bot_status: off\n", 5, "a", "YAML reads on, off", "paused"),
    ("unassign-team-not-a-flag", "rules:\n  - id: a\n    trigger: {event: welcome}\n"
     "    actions:\n      - unassign: {team: support}\n", 5, "a", "expected true or false", None),
    ("action-argument-wrong-type", "rules:\n  - id: a\n    trigger: {event: welcome}\n"
     "    actions:\n      - add_tag: {tags: vip}\n", 5, "a", "expected a list, got text", None),
    ("empty-actions", "rules:\n  - id: a\n    trigger: {event: welcome}\n    actions: []\n", 4, "a",
     "should be non-empty", None),
    ("expression-syntax-error", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    conditions:\n      - \"lower(message.text == 'hi'\"\n    actions: [{add_tag: {tag: x}}]\n",
     5, "a", "syntax error", "Python-like"),
    ("unknown-field", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    conditions:\n      - message.txt == 'hi'\n    actions: [{add_tag: {tag: x}}]\n", 5, "a",
     "unknown field 'message.txt'", "`message.text`"),
    ("name-not-in-trigger-context", "rules:\n  - id: a\n    trigger: {event: conversation.closed}\n"
     "    conditions:\n      - message.text == 'hi'\n    actions: [{add_tag: {tag: x}}]\n", 5, "a",
     "unknown name 'message' for this trigger", "this trigger provides"),
    ("dunder-access", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    conditions:\n      - message.text.__class__\n    actions: [{add_tag: {tag: x}}]\n", 5, "a",
     "names starting with '_' are not allowed", None),
    ("unknown-function", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    conditions:\n      - lowercase(message.text) == 'hi'\n"
     "    actions: [{add_tag: {tag: x}}]\n", 5, "a", "unknown function 'lowercase'", "`lower`"),
    ("method-call", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    conditions:\n      - message.text.lower() == 'hi'\n    actions: [{add_tag: {tag: x}}]\n",
     5, "a", "method calls are not allowed", None),
    ("comprehension", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    conditions:\n      - \"[c for c in message.text]\"\n    actions: [{add_tag: {tag: x}}]\n",
     5, "a", "a list comprehension is not allowed", None),
    ("nested-condition-error", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    conditions:\n      any:\n        - conversation.is_open\n        - not: contact.tagz\n"
     "    actions: [{add_tag: {tag: x}}]\n", 7, "a", "unknown field 'contact.tagz'", "`contact.tags`"),
    ("condition-with-two-operators", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    conditions:\n      all: [conversation.is_open]\n      any: [conversation.is_open]\n"
     "    actions: [{add_tag: {tag: x}}]\n", 5, "a", "exactly one of all / any / not", None),
    ("set-field-bad-expr", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    actions:\n      - set_field: {name: n, expr: \"messag.text\"}\n", 5, "a",
     "unknown name 'messag'", "`message`"),
    ("set-field-needs-value", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    actions:\n      - set_field: {name: n}\n", 5, "a", "missing required key 'value'", None),
    ("set-field-value-and-expr", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    actions:\n      - set_field: {name: n, value: 1, expr: 'channel'}\n", 5, "a",
     "only one of the alternatives", "literal value"),
    ("empty-file", "", 1, None, "the file is empty", "rules:"),
    ("http-request-host-from-event-data", "rules:\n  - id: a\n    trigger: {event: message.received}\n"
     "    actions:\n      - http_request: {url: \"{{ params.url }}/hook\"}\n", 5, "a",
     "is not a valid url", "event data can never choose where a request goes"),
    # a header a rule may not set, in any letter case, reported at its own line
    ("http-request-authorization-in-capitals", HEADERS + "            AUTHORIZATION: Bearer abc\n",
     9, "a", "a rule may not set AUTHORIZATION: rule files carry no credentials", "X-Api-Key"),
    ("http-request-cookie", HEADERS + "            cOOkie: session=1\n", 9, "a",
     "a rule may not set cOOkie", "redacted"),
    ("http-request-proxy-authorization", HEADERS + "            proxy-authorization: Basic eA==\n",
     9, "a", "a rule may not set proxy-authorization", "X-Api-Key"),
    ("http-request-host", HEADERS + "            Host: internal.example\n", 9, "a",
     "a rule may not set Host: the worker writes it itself", "remove Host"),
    ("http-request-framing", HEADERS + "            transfer-ENCODING: chunked\n", 9, "a",
     "the worker writes it itself", None),
    ("http-request-idempotency-key", HEADERS + "            Idempotency-Key: fixed\n", 9, "a",
     "a rule may not set Idempotency-Key", None),
    ("http-request-header-line-break", HEADERS + '            X-Note: "one\\r\\nX-Injected: 1"\n',
     9, "a", "the value of X-Note is not one line of printable text", "line breaks"),
]


@pytest.mark.parametrize("name, text, line, rule_id, message, hint", BROKEN,
                         ids=[case[0] for case in BROKEN])
def test_broken_rule_file_reports_the_right_line(tmp_path, name, text, line, rule_id, message, hint):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([path])
    error = caught.value.errors[0]
    assert error.file == str(path)
    assert error.line == line, str(error)
    assert error.column is not None and error.column >= 1
    assert error.rule_id == rule_id
    assert message in error.message, str(error)
    assert error.hint, f"no fix hint: {error}"
    if hint is not None:
        assert hint in error.hint, str(error)
    rendered = str(error)
    assert rendered.startswith(f"{path}:{line}:{error.column}")


@pytest.mark.parametrize("header", [
    "Authorization", "Proxy-Authorization", "Cookie", "Host", "Content-Length",
    "Transfer-Encoding", "Connection", "Keep-Alive", "TE", "Trailer", "Upgrade", "Expect",
    "Idempotency-Key"])
def test_a_rule_may_not_set_a_credential_or_what_the_worker_writes(tmp_path, header):
    for spelling in (header, header.upper(), header.lower(), header.swapcase()):
        path = tmp_path / "rules.yaml"
        path.write_text(HEADERS + f"            {spelling}: x\n", "utf-8")
        with pytest.raises(RuleSetInvalid) as caught:
            load_rule_set([path])
        [error] = caught.value.errors
        assert error.message.startswith(f"a rule may not set {spelling}: ")
        assert (error.line, error.path) == (9, f"actions/0/http_request/headers/{spelling}")


def test_at_least_twenty_broken_files_are_covered():
    assert len(BROKEN) >= 20


def test_every_problem_in_every_file_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text(textwrap.dedent("""\
        rules:
          - id: one
            trigger: {event: welcom}
            actions: [{add_tag: {tag: x}}]
          - id: two
            trigger: {event: message.received}
            conditions: ["mesage.text == 'x'"]
            actions: [{assing: {user: s}}]
        """), "utf-8")
    (tmp_path / "b.yaml").write_text("rules:\n  - id: three\n    trigger: {event: welcome}\n"
                                     "    actions: [{add_tag: {}}]\n", "utf-8")
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([tmp_path])
    found = {(Path(e.file).name, e.line, e.rule_id) for e in caught.value.errors}
    assert found == {("a.yaml", 3, "one"), ("a.yaml", 7, "two"), ("a.yaml", 8, "two"),
                     ("b.yaml", 4, "three")}


def test_duplicate_ids_across_files_name_both_places(tmp_path):
    (tmp_path / "a.yaml").write_text("rules:\n" + GOOD_RULE, "utf-8")
    (tmp_path / "b.yaml").write_text("rules:\n" + GOOD_RULE, "utf-8")
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([tmp_path])
    [error] = caught.value.errors
    assert error.rule_id == "ok" and error.file.endswith("b.yaml") and error.line == 2
    assert "a.yaml:2" in error.message


def test_a_rule_set_is_all_valid_or_rejected(tmp_path):
    (tmp_path / "good.yaml").write_text("rules:\n" + GOOD_RULE, "utf-8")
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: bad\n", "utf-8")
    with pytest.raises(RuleSetInvalid):
        load_rule_set([tmp_path])


def test_a_missing_path_is_reported():
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set(["/no/such/rules"])
    assert isinstance(caught.value.errors[0], RuleFileError)


def test_the_example_rules_validate_clean_and_cover_every_trigger_and_action():
    rule_set = load_rule_set([REPO / "rules"])
    built_in = {str(rule.event) for rule in rule_set.rules} - {
        str(rule.event) for rule in rule_set.rules if isinstance(rule.event, CustomEventType)}
    assert built_in == {str(t) for t in TRIGGER_TYPES}
    used = {type(action).name for rule in rule_set.rules for action in rule.actions}
    assert used == set(ACTIONS)


def test_the_schema_and_the_registries_agree():
    schema = rules_schema()
    assert set(schema["$defs"]["action"]["properties"]) == set(ACTIONS)
    known, custom = schema["$defs"]["trigger"]["properties"]["event"]["anyOf"]
    assert set(known["enum"]) == {str(t) for t in TRIGGER_TYPES}
    assert custom == {"$ref": "#/$defs/custom_event"}
    assert schema["$defs"]["custom_event"]["pattern"] == CUSTOM_NAME.pattern
    assert load_schema("event")["properties"]["type"]["anyOf"][1]["pattern"] == CUSTOM_NAME.pattern


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out=out, err=out)
    return status, out.getvalue()


def test_validate_command_exit_status(tmp_path):
    status, output = run_cli("validate", str(REPO / "rules"))
    assert status == 0 and output.startswith("OK: ")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN[11][1], "utf-8")
    status, output = run_cli("validate", str(bad))
    assert status == 1
    assert f"{bad}:3:" in output and "[a]" in output and "did you mean" in output
    status, output = run_cli("validate", "--format", "json", str(bad))
    assert status == 1 and json.loads(output)["errors"][0]["line"] == 3


def test_schema_command_prints_the_shipped_schema():
    status, output = run_cli("schema")
    assert status == 0
    assert json.loads(output)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_a_file_that_is_not_utf8_is_reported(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("rules:\n  - id: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([path])
    [error] = caught.value.errors
    assert "not UTF-8" in error.message and error.hint == "save the file as UTF-8"


def test_one_validate_run_reports_every_phase_with_the_right_lines(tmp_path):
    """Schema, expressions (every bad condition of a rule, even one with a schema error),
    templates, channels, duplicate ids across files and the static checks, in one run."""
    (tmp_path / "a.yaml").write_text(textwrap.dedent("""\
        rules:
          - id: broken
            priority: high
            trigger: {event: message.received, channels: [facebok]}
            conditions:
              - "lower(mesage.text) == 'x'"
              - "contact.tagz"
            actions:
              - send_message: {text: "Hi {{ contact.nme }}"}
              - add_tag: vip
          - id: loop-a
            trigger: {event: contact.tag_added}
            actions: [{add_tag: [b]}]
          - id: twice
            trigger: {event: welcome}
            actions: [{remove_tag: [a, b]}]
        """), "utf-8")
    (tmp_path / "b.yaml").write_text(textwrap.dedent("""\
        rules:
          - id: twice
            trigger: {event: welcome}
            actions: [{close_conversation: {}}]
        """), "utf-8")
    with pytest.raises(RuleSetInvalid) as caught:
        load_rule_set([tmp_path])
    found = [(Path(e.file).name, e.line, e.rule_id, e.message.split(" (")[0][:40])
             for e in caught.value.errors]
    assert found == [
        ("a.yaml", 3, "broken", "expected a whole number, got text"),
        ("a.yaml", 4, "broken", "unknown channel 'facebok': the rule woul"),
        ("a.yaml", 6, "broken", "unknown name 'mesage' for this trigger"),
        ("a.yaml", 7, "broken", "unknown field 'contact.tagz' for this tr"),
        ("a.yaml", 9, "broken", "in {{ contact.nme }}: unknown field 'con"),
        ("a.yaml", 11, "loop-a", "these rules trigger one another with no "),
        ("b.yaml", 2, "twice", "duplicate rule id 'twice'"),
    ]
    assert "a.yaml:14" in caught.value.errors[-1].message
