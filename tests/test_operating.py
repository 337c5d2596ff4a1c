"""The engine as an operator runs it, through the real commands: the worker and ``tick``
refuse a bad option before they touch the database and say in one line what they did;
Alembic keeps quiet; what a default run leaves beside the database is ignored by git; every
command's ``--help`` says each default once; traces never show None; the report fits 100
columns."""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta

import pytest

from rules_engine.cli import build_parser
from rules_engine.metrics import STATISTICS
from rules_engine.report_format import duration
from rules_engine.store.store import SCHEMA_REVISION
from rules_engine.trace.render import render_trace

from .conftest import T0, message
from .receiver import receiving
from .test_cli_as_a_user import REPO, cli, database, no_traceback  # noqa: F401 - a fixture
from .test_timers import IDLE_CLOSE

BROKEN_RULES = "rules:\n  - id: x\n    trigger: {event: no.such.event}\n    actions: []\n"


@pytest.mark.parametrize("argv, variables, fragment", [
    (["worker", "--threads", "0"], {}, "argument --threads: 0 is not above zero"),
    (["worker", "--poll", "soon"], {}, "argument --poll: 'soon' is not a number"),
    (["worker", "--max-age", "3y"], {}, "'3y' is not a duration"),
    (["worker", "--lease", "5", "--timeout", "10"], {}, "must be longer than the HTTP timeout"),
    (["worker", "--rules", "BROKEN"], {}, "cannot load the rules for the timers"),
    (["worker", "--database-url", "bogus://x"], {}, "cannot use the database URL 'bogus://x'"),
    (["worker", "--once"], {"RULES_ENGINE_OUTBOUND_ALLOW": "*.example.com"},
     "RULES_ENGINE_OUTBOUND_ALLOW: '*.example.com' is not a host name"),
    (["tick", "--now", "yesterday"], {},
     "argument --now: 'yesterday' is not an ISO 8601 timestamp"),
])
def test_a_bad_option_is_refused_before_the_database_is_touched(tmp_path, argv, variables,
                                                                fragment):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "rules.yaml").write_text(BROKEN_RULES, "utf-8")
    here = tmp_path / "here"
    here.mkdir()
    done = cli(*[str(broken) if a == "BROKEN" else a for a in argv], cwd=here, **variables)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert fragment in done.stderr and done.stdout == ""
    assert list(here.iterdir()) == []  # no database created, nothing migrated
    no_traceback(done)


def test_worker_once_on_a_fresh_database_says_so_and_alembic_keeps_quiet(tmp_path):
    done = cli("worker", "--once", "--rules", str(REPO / "rules"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "worker: 0 outbox rows due; nothing sent; fired 0 timers\n"
    assert "alembic" not in done.stderr.lower()
    assert [line.split(" ", 2)[2] for line in done.stderr.splitlines()] == [
        "rules_engine.store.store the database schema of sqlite:///rules-engine.db went from "
        f"revision none to {SCHEMA_REVISION}"]
    without_rules = cli("worker", "--once", "--rules", str(tmp_path / "none"), cwd=tmp_path)
    assert without_rules.stdout == ("worker: 0 outbox rows due; nothing sent; timers not "
                                    "fired (no rules directory)\n")


CALLING_AND_IDLE = """
rules:
  - id: crm
    trigger: {event: message.received}
    actions:
      - http_request: {url: "CRM/notes", body: {text: "{{ message.text }}"}}
""" + IDLE_CLOSE.split("rules:\n", 1)[1]


def test_worker_once_says_what_became_of_each_row_and_timer(make_engine, database_url, tmp_path):
    answers = {"ok": 200, "bad": 400, "later": 503}
    with receiving(lambda d, n: (answers[d.body["text"]], {}, 0)) as crm:
        engine = make_engine(CALLING_AND_IDLE.replace("CRM", crm.url))
        for n, text in enumerate(answers):
            engine.process(message(f"once-{n}", text))  # at T0: the idle clocks ran out since
        done = cli("--database-url", database_url, "worker", "--once",
                   "--rules", str(tmp_path / "rules"), RULES_ENGINE_OUTBOUND_ALLOW="127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("worker: 3 outbox rows due: 1 sent, 1 failed, 1 deferred; "
                           "fired 3 timers (3 rules fired)\n")


def test_tick_says_what_it_fired_and_what_is_due_next(make_engine, database_url, tmp_path):
    engine = make_engine(IDLE_CLOSE)
    engine.process(message("tick-1", "hello"))
    engine.process(message("tick-2", "hello", minutes=30))
    now = (T0 + timedelta(hours=24, minutes=10)).isoformat()
    done = cli("--database-url", database_url, "--rules", str(tmp_path / "rules"), "tick",
               "--now", now)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "tick: fired 1 timer (1 rule fired) due by 2026-11-03T09:10:00+00:00; "
        "next due at 2026-11-03T09:30:00+00:00")


def test_what_a_default_run_leaves_beside_the_database_git_ignores(tmp_path):
    assert shutil.which("git"), "git is needed to read .gitignore as git does"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    for argv in (["demo-data", "--conversations", "20"], ["worker", "--once"],
                 ["--rules", str(REPO / "rules"), "tick"], ["report"]):
        assert cli(*argv, cwd=tmp_path).returncode == 0
    assert (tmp_path / "rules-engine.db-writer.lock").exists()  # the default run's files
    untracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                               cwd=tmp_path, capture_output=True, text=True, check=True)
    assert untracked.stdout == "?? .gitignore\n"


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand the parser knows, as the words that name it."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from commands(subparser, (*prefix, name))


def help_entries(text: str) -> list[str]:
    """The entries of a ``--help``: each option or argument with its help, on one line."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"  \S", line):
            entries.append(line.strip())
        elif re.match(r"   +\S", line) and entries:
            entries[-1] += " " + line.strip()
    return entries


@pytest.mark.parametrize("command", [" ".join(c) for c in commands(build_parser())])
def test_every_commands_help_says_each_default_once(command):
    done = cli(*command.split(), "--help")
    assert done.returncode == 0 and "usage: rules-engine" in done.stdout, done.stderr
    assert "(default: None)" not in done.stdout and "(default: False)" not in done.stdout
    for entry in help_entries(done.stdout):
        assert entry.lower().count("default") <= 1, entry
        appended = re.search(r"\(default: ([^)]*)\)$", entry)
        if appended:
            assert f"else {appended.group(1)}" not in entry, entry


def test_a_trace_never_shows_none(database):  # noqa: F811 - the fixture
    """demo-2 asks for a refund: the demo rules assign it to a team, and to no user."""
    done = cli("--rules", str(REPO / "rules"), "--database-url", database, "explain", "demo-2")
    assert done.returncode == 0, done.stderr
    assert "None" not in done.stdout
    assert "(assigned conversation " in done.stdout and " to team billing)" in done.stdout
    assert "  conversation.assigned (depth 1) {team=billing}\n" in done.stdout


def test_a_trace_of_no_channel_and_no_contact_leaves_them_out():
    trace = {"event_id": "e-1", "type": "conversation.close", "channel": None,
             "contact_id": None, "conversation_id": None, "timestamp": "", "received_at": "",
             "ruleset_version": "v1", "fired": [], "changes": [],
             "depth_bound": {"max_depth": 5, "reached": False, "dropped": []},
             "steps": [{"event": "message.failed", "depth": 1, "channel": None,
                        "contact_id": None, "conversation_id": None, "rules": [],
                        "params": {"platform_message_id": None,
                                   "error": {"kind": "permanent", "code": None}}}]}
    text = render_trace(trace)
    assert text.splitlines()[:2] == ["event e-1: conversation.close, rules version v1",
                                     "  message.failed (depth 1) {error={kind=permanent}}"]
    assert "None" not in text


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory) -> str:
    """A store filled by ``rules-engine demo-data`` (the last 30 days)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
    done = cli("--database-url", url, "demo-data", "--conversations", "400", "--days", "30")
    assert done.returncode == 0, done.stderr
    return url


CSV_HEADER = ["closed", "mean_seconds", "median_seconds", "p90_seconds", "max_seconds",
              "open_now", "open_max_age_seconds", "responded", "first_response_mean_seconds",
              "first_response_median_seconds", "first_response_p90_seconds",
              "first_response_max_seconds", "since", "until"]


@pytest.mark.parametrize("by", ["none", "user", "team", "channel", "close_source", "day"])
def test_the_report_table_fits_100_columns_with_every_statistic(demo_database, by):
    done = cli("--database-url", demo_database, "report", "--by", by, "--channel", "whatsapp")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, done.stdout
    resolution = lines.index("Resolution time of those closed, and those open now:")
    first = lines.index("First response time of those first answered:")
    assert lines[resolution + 1].split()[-9:] == ["closed", *STATISTICS, "open", "now",
                                                  "oldest", "open"]
    assert lines[first + 1].split()[-5:] == ["responded", *STATISTICS]
    report = json.loads(cli("--database-url", demo_database, "report", "--by", by,
                            "--format", "json", "--channel", "whatsapp").stdout)
    totals, shown = report["totals"], [line.split() for line in lines if line.startswith("TOTAL")]
    assert shown == [
        ["TOTAL", str(totals["closed"]), *figures(totals["resolution_seconds"].values()),
         str(totals["open_now"]), *figures([totals["open_age_seconds"]["max"]])],
        ["TOTAL", str(totals["responded"]), *figures(totals["first_response_seconds"].values())]]
    as_csv = cli("--database-url", demo_database, "report", "--by", by, "--format", "csv",
                 "--channel", "whatsapp")
    header = next(csv.reader(io.StringIO(as_csv.stdout)))
    assert header == [by if by != "none" else "group", *CSV_HEADER]


def figures(seconds) -> list[str]:
    """Durations as the table writes them, split at spaces as the table's lines are."""
    return " ".join(duration(value) for value in seconds).split()
