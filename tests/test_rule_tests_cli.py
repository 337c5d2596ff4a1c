"""`rules-engine test` and `validate` on rule tests as an admin meets them (real processes):
tests on real clocks, tests that find their rules, test files checked by `validate`."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import yaml

from .test_cli_as_a_user import REPO, cli, no_traceback

BERLIN = REPO / "tests" / "fixtures" / "berlin_shop"

RULE = """\
rules:
  - id: close-on-thanks
    trigger: {event: message.received}
    conditions: ["message.text == 'thanks'"]
    actions: [{close_conversation: {}}]
"""

CASE = """\
tests:
  - name: thanks closes
    given:
      contacts:
        - {ref: lee, channel: viber, external_id: v1, conversation: {}}
    events:
      - {type: message.received, contact: lee, text: thanks}
    expect:
      fired: [close-on-thanks]
"""


def rules_folder(root: Path, name: str = "myrules", case: str = CASE) -> Path:
    """A rules folder with one rule and, in its tests/, one test file."""
    (root / name / "tests").mkdir(parents=True)
    (root / name / "r.yaml").write_text(RULE, "utf-8")
    (root / name / "tests" / "support.yaml").write_text(textwrap.dedent(case), "utf-8")
    return root / name


def version_of(folder: str | Path, cwd: Path | None = None) -> str:
    """The rule set's version (a hash of its files' names, as given, and texts)."""
    done = cli("validate", str(folder), "--format", "json", cwd=cwd)
    return str(json.loads(done.stdout)["version"])


def test_business_hours_on_real_dates_across_summer_time_and_on_a_holiday(tmp_path):
    done = cli("test", str(BERLIN / "tests" / "clock.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[0] == (
        f"rule set: {BERLIN} (2 rule(s), version {version_of(BERLIN)})")
    assert re.search(r"^10 passed, 0 failed in", done.stdout, re.MULTILINE)


def test_an_event_with_a_timestamp_and_an_at_is_an_error_at_its_place(tmp_path):
    folder = rules_folder(tmp_path, case="""\
        tests:
          - name: two times
            events:
              - {type: message.received, channel: viber, contact: {external_id: v1}, text: hi,
                 timestamp: 2026-03-30T09:30:00+02:00, at: 5}
            expect: {nothing_fires: true}
        """)
    done = cli("test", "tests/support.yaml", cwd=folder)
    assert done.returncode == 1
    assert ("error: tests/support.yaml:5:48 tests/0/events/0/at: an event has a `timestamp` or "
            "an `at`, not both (hint: timestamp: is the event's time; at: is minutes after the "
            "case's start)") in done.stdout
    assert "0 passed, 1 failed" in done.stdout


def test_times_that_are_no_times_and_events_before_the_start_are_errors(tmp_path):
    rules_folder(tmp_path, case="""\
        tests:
          - name: no offset
            events:
              - {type: message.received, channel: viber, contact: {external_id: v1}, timestamp: 2026-03-30T09:30:00}
            expect: {nothing_fires: true}
          - name: a start that is not a time
            start: "monday morning"
            events: [{type: message.received, channel: viber, contact: {external_id: v1}}]
            expect: {nothing_fires: true}
          - name: no such day
            events:
              - {type: message.received, channel: viber, contact: {external_id: v1}, timestamp: "2026-02-30T09:00:00Z"}
            expect: {nothing_fires: true}
          - name: before the start
            start: 2026-12-25T10:00:00+01:00
            events:
              - type: message.received
                channel: viber
                contact: {external_id: v1}
                timestamp: 2026-12-24T10:00:00+01:00
            expect: {nothing_fires: true}
        """)
    done = cli("validate", "myrules", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "myrules/tests/support.yaml:4:89 tests/0/events/0/timestamp: '2026-03-30T09:30:00' is "
        "not a valid timestamp (hint: e.g. `timestamp: 2026-03-30T09:30:00+02:00`: an ISO 8601 "
        "time with its offset from UTC (+02:00, Z))",
        "myrules/tests/support.yaml:7:12 tests/1/start: 'monday morning' is not a valid start "
        "(hint: e.g. `start: 2026-03-30T09:30:00+02:00`: an ISO 8601 time with its offset from "
        "UTC (+02:00, Z))",
        "myrules/tests/support.yaml:12:89 tests/2/events/0/timestamp: '2026-02-30T09:00:00Z' is "
        "not an ISO 8601 timestamp (hint: e.g. 2026-11-25T10:00:00Z)",
        "myrules/tests/support.yaml:20:20 tests/3/events/0/timestamp: this event comes before "
        "the case starts (2026-12-25T09:00:00+00:00) (hint: the given contacts exist from the "
        "start on: set the case's `start:` to this time or earlier)",
        "4 problem(s) found",
    ]


def test_a_test_file_runs_against_the_rules_above_its_tests_folder_from_anywhere(tmp_path):
    folder = rules_folder(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    heading = (f"rule set: ../myrules (1 rule(s), version "
               f"{version_of('../myrules', cwd=tmp_path / 'elsewhere')})")
    for given in ("../myrules/tests/support.yaml", "../myrules/tests", "../myrules"):
        done = cli("test", given, cwd=tmp_path / "elsewhere",
                   RULES_ENGINE_RULES_DIR=str(REPO / "rules"))
        assert done.returncode == 0, done.stdout
        assert done.stdout.splitlines()[0] == heading
        assert "1 passed, 0 failed" in done.stdout
    inside = cli("test", "support.yaml", cwd=folder / "tests")
    assert inside.returncode == 0 and inside.stdout.startswith("rule set: .. (1 rule(s)")


def test_an_explicit_rules_option_wins(tmp_path):
    folder = rules_folder(tmp_path)
    done = cli("test", str(folder / "tests" / "support.yaml"), "--rules", str(REPO / "rules"))
    assert done.stdout.startswith(f"rule set: {REPO / 'rules'} (")
    assert done.returncode == 1 and " - close-on-thanks\n+- thank-you-reply" in done.stdout


def test_tests_of_two_rule_sets_at_once_are_refused(tmp_path):
    first, second = rules_folder(tmp_path, "first"), rules_folder(tmp_path, "second")
    done = cli("test", str(first / "tests"), str(second / "tests" / "support.yaml"))
    assert done.returncode == 1 and done.stdout == ""
    assert (f"these tests belong to different rule sets: {first}, {second} (hint: test one "
            "rule set at a time, or name the rules with --rules)") in done.stderr
    no_traceback(done)


UNKNOWN_NAMES = """\
    tests:
      - name: names rules that do not exist
        events:
          - {type: message.received, channel: viber, contact: {external_id: v1}, text: thanks}
        expect:
          fired: [close-on-thank]
          not_fired: [close-on-thanks, reopen]
          actions:
            - {rule: close-on-tanks, action: close_conversation}
      - name: a key the schema does not know
        events:
          - {type: message.received, channel: viber, contact: {external_id: v1}, text: hi}
        expect: {nothing_fire: true}
    """


def test_validate_checks_the_tests_beside_the_rules(tmp_path):
    folder = rules_folder(tmp_path, case=UNKNOWN_NAMES)
    done = cli("validate", "myrules", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "myrules/tests/support.yaml:6:15 tests/0/expect/fired/0: unknown rule 'close-on-thank' "
        "(hint: did you mean `close-on-thanks`?)",
        "myrules/tests/support.yaml:7:36 tests/0/expect/not_fired/1: unknown rule 'reopen' "
        "(hint: no rule of the rule set has this id (is it the right rule set?))",
        "myrules/tests/support.yaml:9:18 tests/0/expect/actions/0/rule: unknown rule "
        "'close-on-tanks' (hint: did you mean `close-on-thanks`?)",
        "myrules/tests/support.yaml:13:14 tests/1/expect/nothing_fire: unknown key "
        "'nothing_fire' (hint: did you mean `nothing_fires`?)",
        "4 problem(s) found",
    ]
    one_file = cli("validate", "tests/support.yaml", "--format", "json", cwd=folder)
    assert one_file.returncode == 1
    found = json.loads(one_file.stdout)
    assert found["ok"] is False and len(found["errors"]) == 4
    assert found["errors"][0]["file"] == "tests/support.yaml"
    assert found["errors"][0]["hint"] == "did you mean `close-on-thanks`?"


def test_validate_reports_broken_rules_and_broken_tests_in_one_run(tmp_path):
    folder = rules_folder(tmp_path, case=UNKNOWN_NAMES)
    (folder / "r.yaml").write_text(RULE.replace("message.received", "message.recieved"))
    done = cli("validate", "myrules", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith("myrules/r.yaml:3:") and "'message.recieved'" in lines[0]
    assert lines[1:] == ["myrules/tests/support.yaml:13:14 tests/1/expect/nothing_fire: "
                         "unknown key 'nothing_fire' (hint: did you mean `nothing_fires`?)",
                         "2 problem(s) found"]


def test_validate_counts_the_test_cases_it_checked(tmp_path):
    folder = rules_folder(tmp_path)
    done = cli("validate", str(folder))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"OK: 1 rule(s) in 1 file(s) and 1 test case(s) in 1 test file(s), "
                           f"version {version_of(folder)}\n")
    as_json = json.loads(cli("validate", str(folder), "--format", "json").stdout)
    assert (as_json["tests"], as_json["test_files"]) == (1, 1)


def test_with_no_arguments_both_commands_use_the_example_rules_and_their_tests():
    tested = cli("test", cwd=REPO)
    assert tested.returncode == 0, tested.stdout
    assert re.match(r"rule set: rules \(\d+ rule\(s\), version \w+\)\n", tested.stdout)
    validated = cli("validate", cwd=REPO)
    cases = len(re.findall(r"PASSED$", tested.stdout, re.MULTILINE))
    assert validated.returncode == 0, validated.stderr
    assert f" and {cases} test case(s) in 7 test file(s), version " in validated.stdout


def test_the_holiday_case_in_the_docs_is_the_one_the_fixture_runs():
    docs = (REPO / "docs" / "rules.md").read_text()
    block = re.search(r"```yaml\n(  - name: on a holiday.*?)```", docs, re.S)
    assert block, "docs/rules.md shows no holiday case"
    shown = yaml.safe_load(block.group(1))[0]
    run = yaml.safe_load((BERLIN / "tests" / "clock.yaml").read_text())["tests"]
    fixture = next(case for case in run if case["name"] == shown["name"])
    assert shown == {**fixture, "expect": {"fired": fixture["expect"]["fired"]}}
