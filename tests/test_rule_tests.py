"""``rules-engine test``: the shipped rule tests pass, and a wrong expectation fails readably."""
from __future__ import annotations

import re
import textwrap
from datetime import datetime, timedelta, timezone

import yaml

from rules_engine import load_rule_set
from rules_engine.rule_tests import Clock

from .test_validation import REPO, run_cli


def test_the_shipped_rule_tests_pass_and_cover_every_example_rule():
    status, output = run_cli("--rules", str(REPO / "rules"), "test")
    assert status == 0, output
    assert re.search(r"^53 passed, 0 failed in", output, re.MULTILINE)
    mentioned = set()
    for path in (REPO / "rules" / "tests").glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            expect = case["expect"]
            mentioned |= set(expect.get("fired", [])) | set(expect.get("not_fired", []))
            mentioned |= {action["rule"] for action in expect.get("actions", [])}
    assert {rule.id for rule in load_rule_set([REPO / "rules"]).rules} <= mentioned


def write(tmp_path, text: str):
    path = tmp_path / "case.yaml"
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def test_a_wrong_expectation_fails_with_a_readable_diff(tmp_path):
    path = write(tmp_path, """
        tests:
          - name: thanks closes the conversation
            given:
              contacts:
                - {ref: lee, channel: facebook, external_id: psid-1, conversation: {}}
            events:
              - {type: message.received, contact: lee, text: thanks}
            expect:
              fired: [close-on-thanks]
              conversations:
                - {contact: lee, status: open}
    """)
    status, output = run_cli("--rules", str(REPO / "rules"), "test", str(path))
    assert status == 1
    assert f"{path}::thanks closes the conversation FAILED" in output
    fired_diff = output[output.index("expect/fired:"):]
    assert " - close-on-thanks\n+- thank-you-reply" in fired_diff
    conversation_diff = output[output.index("expect/conversations[lee]:"):]
    assert "-status: open\n+status: closed" in conversation_diff
    assert output.rstrip().splitlines()[-1].startswith("0 passed, 1 failed in")


def test_a_missing_action_is_shown_against_what_ran(tmp_path):
    path = write(tmp_path, """
        tests:
          - name: vip routing
            given:
              contacts:
                - {ref: s, channel: facebook, external_id: p, tags: [vip]}
            events:
              - {type: message.received, contact: s, text: hi}
            expect:
              actions:
                - {rule: vip-facebook-to-susan, action: assign, args: {user: maria}}
    """)
    status, output = run_cli("--rules", str(REPO / "rules"), "test", str(path))
    assert status == 1
    assert "   action: assign\n   args:\n-    user: maria\n+    user: susan\n+    team: vip" in output


def test_a_malformed_test_file_names_the_line(tmp_path):
    path = write(tmp_path, """
        tests:
          - name: no events
            expect: {nothing_fires: true}
    """)
    status, output = run_cli("--rules", str(REPO / "rules"), "test", str(path))
    assert status == 1
    assert f"error: {path}:3:" in output and "missing required key 'events'" in output


def test_an_unknown_contact_reference_is_an_error(tmp_path):
    path = write(tmp_path, """
        tests:
          - name: who?
            events:
              - {type: message.received, contact: nobody, text: hi}
            expect: {nothing_fires: true}
    """)
    status, output = run_cli("--rules", str(REPO / "rules"), "test", str(path))
    assert status == 1 and "no given contact 'nobody'" in output


def test_a_cases_clock_follows_on_from_the_latest_moment_and_never_goes_back():
    start = datetime(2026, 3, 27, 8, 0, tzinfo=timezone.utc)
    clock = Clock(start)
    assert clock.event_time({}) == start  # the first event given no time: the start
    assert clock.event_time({}) == start + timedelta(minutes=1)
    assert clock.advance(timedelta(hours=2)) == start + timedelta(hours=2, minutes=1)
    assert clock.event_time({"at": 30}) == start + timedelta(hours=2, minutes=30)
    late = clock.event_time({"timestamp": "2026-03-27T07:00:00Z"})
    assert late == datetime(2026, 3, 27, 7, 0, tzinfo=timezone.utc)
    assert clock.event_time({}) == start + timedelta(hours=2, minutes=31)
    assert clock.advance(timedelta(minutes=10)) == start + timedelta(hours=2, minutes=41)
