"""The command line as an admin meets it: a real subprocess, stdout and stderr apart,
exit statuses as ``--help`` documents them (0 done, 1 problems found, 2 could not run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rules_engine import Store

REPO = Path(__file__).resolve().parent.parent


def cli(*argv: str, cwd: Path | None = None, stdin: str | None = None,
        shell_pipe: str | None = None, **variables: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RULES_ENGINE_")}
    environment.update(variables)
    command = [sys.executable, "-m", "rules_engine.cli", *argv]
    if shell_pipe:
        line = " ".join(f"'{part}'" for part in command) + f" | {shell_pipe}"
        return subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True,
                              text=True, cwd=cwd, env=environment, timeout=120)
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, input=stdin,
                          env=environment, timeout=120)


def no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr


@pytest.fixture
def database(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    done = cli("--rules", str(REPO / "rules"), "--database-url", url, "ingest",
               str(REPO / "rules" / "events" / "demo.jsonl"))
    assert done.returncode == 0, done.stderr
    return url


def test_help_documents_exit_codes_defaults_and_has_no_code_markup():
    done = cli("--help")
    assert done.returncode == 0 and "exit status:" in done.stdout and "``" not in done.stdout
    report = cli("report", "--help").stdout
    assert "(default: table)" in report and "(default: none)" in report
    demo = cli("demo-data", "--help").stdout
    assert "(default: 6000)" in demo


@pytest.mark.parametrize("command", ["report", "explain facebook:m1", "events"])
def test_read_only_commands_in_the_wrong_folder_create_nothing(tmp_path, command):
    done = cli(*command.split(), cwd=tmp_path)
    assert done.returncode == 2 and "no database at rules-engine.db" in done.stderr
    assert list(tmp_path.iterdir()) == [] and done.stdout == ""
    no_traceback(done)


def test_a_mistyped_sqlite_path_creates_no_folder(tmp_path):
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    done = cli("--database-url", f"sqlite:///{missing}", "report")
    assert done.returncode == 2 and not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--database-url", "bogus://x", "report"], "cannot use the database URL 'bogus://x'"),
    (["--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none", "db", "current"],
     "cannot reach the database"),
    (["demo-data", "--conversations", "-5"], "-5 is less than 1"),
    (["--max-depth", "-1", "validate"], "-1 is less than 0"),
    (["prune-traces", "--keep-days", "-3"], "-3 is less than 0"),
    (["ingest", "/no/such/file.jsonl"], "No such file or directory"),
])
def test_bad_input_gets_a_message_and_status_2_never_a_traceback(argv, fragment):
    done = cli(*argv)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert fragment in done.stderr and done.stdout == ""
    no_traceback(done)


def test_an_error_never_lands_in_the_redirected_output(database, tmp_path):
    done = cli("--database-url", database, "report", "--format", "csv", "--since", "bad")
    assert done.returncode == 1 and done.stdout == "" and "'bad' is not a date" in done.stderr


def test_a_closed_pipe_is_not_an_error(database):
    done = cli("--database-url", database, "report", "--format", "json", "--by", "day",
               shell_pipe="head -c 10")
    assert done.returncode == 0 and "BrokenPipe" not in done.stderr
    no_traceback(done)


def test_global_options_go_before_or_after_the_command(tmp_path):
    before = cli("--rules", str(REPO / "rules"), "validate")
    after = cli("validate", "--rules", str(REPO / "rules"))
    assert before.returncode == after.returncode == 0 and before.stdout == after.stdout
    assert cli("validate", "--rules", str(tmp_path / "none")).returncode == 1


def test_ingest_reports_its_rate(database, tmp_path):
    events = tmp_path / "e.jsonl"
    events.write_text("\n".join(json.dumps({
        "id": f"rate-{n}", "type": "message.received", "channel": "webchat",
        "contact": {"external_id": f"v{n % 7}"}, "message": {"text": "hi"}}) for n in range(50)))
    done = cli("--rules", str(REPO / "rules"), "--database-url", database, "ingest", str(events))
    assert done.returncode == 0 and "50 applied" in done.stdout and "events/s)" in done.stdout


def test_events_lists_what_was_recorded_with_ids_explain_takes(database):
    done = cli("--database-url", database, "events", "--recent", "3")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 3
    event_id = done.stdout.split()[1]
    assert cli("--database-url", database, "explain", event_id).returncode == 0
    as_json = json.loads(cli("--database-url", database, "events", "--contact", "1",
                             "--format", "json").stdout)
    assert as_json and {event["contact_id"] for event in as_json} == {1}


def test_simulating_a_recorded_event_uses_the_current_rules(database, tmp_path):
    recorded = json.loads(cli("--database-url", database, "events", "--recent", "50",
                              "--format", "json").stdout)
    first = next(e for e in recorded if e["event_id"] == "demo-2")
    line = next(text for text in (REPO / "rules/events/demo.jsonl").read_text().splitlines()
                if '"demo-2"' in text)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - id: brand-new\n    trigger: {event: "
                                  f"{first['type']}}}\n    actions: [{{add_tag: new}}]\n")
    done = cli("--rules", str(rules), "--database-url", database, "simulate", "-", stdin=line)
    assert done.returncode == 0, done.stderr
    assert "[FIRED] brand-new" in done.stdout and "was processed before" in done.stdout
    version = cli("--rules", str(rules), "validate").stdout.split("version ")[1].strip()
    assert f"rules version {version}" in done.stdout


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_first_simulation_needs_no_database_and_creates_none(tmp_path, output):
    folder = tmp_path / "empty"
    folder.mkdir()
    event = (REPO / "rules" / "events" / "demo.jsonl").read_text("utf-8").splitlines()[0]
    done = cli("--rules", str(REPO / "rules"), "simulate", "-", "--format", output,
               "--advance", "25h", cwd=folder, stdin=event)
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    note = "No database at rules-engine.db: simulating on an empty state in memory"
    if output == "text":
        assert done.stdout.splitlines()[0].startswith(note) and "[FIRED]" in done.stdout
    else:
        assert note in done.stderr and json.loads(done.stdout)[0]["event_id"]
    assert list(folder.iterdir()) == []


def test_rule_tests_of_a_rules_directory_and_of_an_unknown_rule(tmp_path):
    assert cli("test", str(REPO / "rules")).returncode == 0
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    (rules / "r.yaml").write_text("rules:\n  - id: tagger\n    trigger: {event: welcome}\n"
                                  "    actions: [{add_tag: hello}]\n")
    (rules / "tests" / "t.yaml").write_text(
        "tests:\n"
        "  - name: names a rule that does not exist\n"
        "    events: [{type: welcome, channel: viber, contact: {external_id: v1}}]\n"
        "    expect: {not_fired: [no-such-rule]}\n"
        "  - name: broken case\n"
        "    events: [{type: welcome}]\n"
        "    expect: {fired: [tagger], colour: blue}\n"
        "  - name: a good case still runs\n"
        "    events: [{type: welcome, channel: viber, contact: {external_id: v2}}]\n"
        "    expect: {fired: [tagger]}\n")
    done = cli("test", str(rules))
    assert done.returncode == 1
    assert "no-such-rule" in done.stdout and "unknown rule" in done.stdout
    assert f"{rules / 'tests' / 't.yaml'}:7" in done.stdout  # the broken case, at its line
    assert "a good case still runs PASSED" in done.stdout and "1 passed, 2 failed" in done.stdout


def test_validate_reports_every_phase_of_a_broken_file(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - id: a\n"
        "    priority: high\n"
        "    trigger: {event: message.received, channels: [facebok]}\n"
        "    conditions: [\"mesage.text == 'x'\", \"contact.tagz\"]\n"
        "    actions: [{add_tag: vip}]\n")
    done = cli("validate", str(tmp_path))
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert [line.split(" ")[0].rsplit(":", 2)[1] for line in lines[:-1]] == ["3", "4", "5", "5"]
    assert "e.g. `priority: 10`" in lines[0] and "did you mean `facebook`?" in lines[1]


def test_demo_data_reports_its_time(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    done = cli("--database-url", url, "demo-data", "--conversations", "200", "--days", "10")
    assert done.returncode == 0 and " in " in done.stdout and Store(url) is not None


def test_a_bad_retention_setting_gets_a_message_not_a_traceback(database):
    done = cli("--database-url", database, "prune-traces", RULES_ENGINE_TRACE_RETENTION_DAYS="abc")
    assert done.returncode == 2 and "RULES_ENGINE_TRACE_RETENTION_DAYS" in done.stderr
    no_traceback(done)
