"""Durable timers across real processes, killed with SIGKILL at the worst moments.

- The webhook server (gunicorn) sets idle clocks and is killed right after its last answer;
  a later ``rules-engine tick`` fires every clock once (both databases).
- A ``tick`` killed while it fires a larger batch loses nothing and fires nothing twice:
  the next ``tick`` fires exactly the rest (both databases).
- Four ``tick`` processes released at the same instant share 1,000 due timers, each fired
  once (PostgreSQL only: there they really run side by side, SKIP LOCKED).
- Ticks racing the webhook server's messages, which restart the clocks they are firing,
  never close a conversation on a clock a message has moved on (PostgreSQL only).

Timers come from events with old timestamps (January 2026), so they are all due at ``NOW``.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import make_url, select, text

from rules_engine.store import tables

from . import webhook_payloads as p
from .conftest import POSTGRES_URL
from .test_server import post_signed_event, start_server, stop_server

IDLE_RULE = """
rules:
  - id: close-when-idle
    trigger: {event: conversation.idle, for: 24h}
    actions: [{close_conversation: {note: idle}}]
"""
START = datetime(2026, 1, 1, tzinfo=UTC)  # the events' own time
NOW = "2026-02-01T00:00:00+00:00"  # after every timer's due time
FIRED = re.compile(r"^tick: fired (\d+) timers? ")
LINE = re.compile(r"^(idle:close-when-idle:\d+) \(due [^)]+\): (\w+): (.*)$")


def cli(database_url: str, rules: Path, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "rules_engine.cli", "--rules", str(rules),
            "--database-url", database_url, *arguments]


def environment() -> dict[str, str]:
    """This process's environment, with output unbuffered (lines are read as they come)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def tick(database_url: str, rules: Path) -> tuple[int, list[tuple[str, str, str]]]:
    """Run ``rules-engine tick --now NOW`` to its end: (its "fired N", its timer lines)."""
    done = subprocess.run(cli(database_url, rules, "tick", "--now", NOW), check=False,
                          capture_output=True, text=True, timeout=120, env=environment())
    assert done.returncode == 0, done.stderr
    return parse_tick(done.stdout, finished=True)


def parse_tick(output: str, *, finished: bool) -> tuple[int, list[tuple[str, str, str]]]:
    """(fired N, or -1 when the process did not get that far; [(timer, status, rules)])."""
    lines = output.splitlines()
    fired = [int(m.group(1)) for m in map(FIRED.match, lines) if m]
    timers = [m.groups() for m in map(LINE.match, lines) if m]
    if finished:
        assert len(fired) == 1 and len(timers) + 1 == len(lines), output[-2000:]
        assert fired[0] == len(timers)
    else:  # killed: its last line may be cut short, and there is no total
        assert fired == [] and len(timers) >= len(lines) - 1, output[-2000:]
    return (fired[0] if fired else -1), timers


def message(n: int, contact: str, minutes: int) -> dict:
    """A message from ``contact`` at START plus ``minutes`` (a January 2026 timestamp)."""
    return {"id": f"msg-{n}-{contact}", "type": "message.received", "channel": "webchat",
            "timestamp": (START + timedelta(minutes=minutes)).isoformat(),
            "contact": {"external_id": contact, "name": contact.title()},
            "message": {"text": f"hello, message {n}"}}


def ingest_messages(database_url: str, rules: Path, folder: Path, contacts: int, *,
                    at_once: bool = False) -> None:
    """One message per contact, through ``rules-engine ingest``: one idle clock each (all
    due at the same time with ``at_once``, else spread over a day)."""
    events = folder / "events.jsonl"
    with events.open("w", encoding="utf-8") as out:
        for n in range(contacts):
            out.write(json.dumps(message(0, f"person-{n}", 0 if at_once else n % 1440)) + "\n")
    done = subprocess.run(cli(database_url, rules, "ingest", str(events)), check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{contacts} applied" in done.stdout, done.stdout


def counts(store) -> dict[str, int]:
    """What the timers did, read with SQL as an auditor would."""
    queries = {
        "timers left": "SELECT count(*) FROM timers",
        "timer firings in the ledger": "SELECT count(*) FROM processed_events "
                                       "WHERE event_id LIKE 'timer:%'",
        "timer traces": "SELECT count(*) FROM event_traces WHERE event_id LIKE 'timer:%'",
        "conversations": "SELECT count(*) FROM conversations",
        "closed by automation": "SELECT count(*) FROM conversations "
                                "WHERE close_source = 'automation'",
        "open": "SELECT count(*) FROM conversations WHERE closed_at IS NULL",
    }
    with store.read() as tx:
        return {name: tx.connection.execute(text(sql)).scalar_one()
                for name, sql in queries.items()}


def fired_by_timers(store) -> int:
    """How many times /metrics counts the idle rule fired by a timer (from the database)."""
    with store.read() as tx:
        return sum(count for source, metric, labels, count in tx.counts()
                   if (source, metric, labels) == ("timer", "rules_fired", ("close-when-idle",)))


def closed_by_their_own_clock(store) -> bool:
    """Every closed conversation was closed by the firing of its own idle clock, at its due
    time (so no clock of another conversation, and no firing at another time)."""
    c = tables.conversations
    with store.read() as tx:
        rows = tx.connection.execute(select(c.c.id, c.c.closed_at, c.c.closed_by_event)
                                     .where(c.c.closed_at.is_not(None))).all()
    return all(row.closed_by_event == f"timer:idle:close-when-idle:{row.id}@"
                                      f"{row.closed_at.isoformat()}" for row in rows)


def inside_a_firing_transaction(store, database_url: str) -> bool:
    """Whether another process is inside a write transaction that has claimed timers: on
    PostgreSQL, it holds the contacts' row-share lock (FOR UPDATE OF contacts); on SQLite,
    it holds the write lock (a BEGIN IMMEDIATE without waiting fails)."""
    if store.dialect == "postgresql":
        with store.read() as tx:
            return bool(tx.connection.execute(text(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'contacts' AND l.mode = 'RowShareLock' "
                "AND l.pid <> pg_backend_pid()")).scalar_one())
    probe = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=0,
                            isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as error:
        assert "locked" in str(error), error
        return True
    finally:
        probe.close()


def wait_for_dead_transactions(store) -> None:
    """PostgreSQL: wait until the server has rolled back the killed process's transaction
    (it notices the closed socket at once on loopback), so that its SKIP LOCKED rows are
    free; a tick started before that would skip them and leave them for the next tick."""
    if store.dialect != "postgresql":
        return
    deadline = time.monotonic() + 20
    while True:  # a new transaction each look: pg_stat_activity is a snapshot within one
        with store.read() as tx:
            open_elsewhere = tx.connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND xact_start IS NOT NULL")).scalar_one()
        if not open_elsewhere:
            return
        assert time.monotonic() < deadline, "the killed tick's transaction is still open"
        time.sleep(0.05)


def test_clocks_set_by_a_server_killed_after_its_last_answer_fire_once(
        database_url, store, write_rules, tmp_path):
    rules = write_rules(IDLE_RULE)
    process, base = start_server(database_url, 2, tmp_path / "server.log", rules_dir=rules)
    try:
        # Two messages per contact, 3 hours apart: the second moves the clock on.
        for n in range(30):
            for number, minutes in ((0, n), (1, n + 180)):
                response = post_signed_event(base, message(number, f"visitor-{n}", minutes))
                assert response.status_code == 200, response.text[:500]
                assert response.json()["results"][0]["status"] == "applied"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: master and workers
        process.wait(timeout=20)
    with store.read() as tx:
        timers = tx.timers()
    assert len(timers) == 30
    for timer in timers:  # 24 hours after each contact's last message
        number, visitor = re.fullmatch(r"msg-(\d)-visitor-(\d+)", timer.set_by_event).groups()
        assert number == "1"
        assert timer.due_at == START + timedelta(minutes=int(visitor) + 180, hours=24)

    fired, lines = tick(database_url, rules)
    assert fired == 30
    assert {(status, fired_rules) for _, status, fired_rules in lines} == {
        ("applied", "close-when-idle")}
    assert len({timer for timer, _, _ in lines}) == 30
    assert counts(store) == {"timers left": 0, "timer firings in the ledger": 30,
                             "timer traces": 30, "conversations": 30,
                             "closed by automation": 30, "open": 0}
    assert closed_by_their_own_clock(store)
    assert tick(database_url, rules) == (0, [])  # fired once, never again


def scraped(base: str, metric: str) -> dict[str, float]:
    """The samples of ``metric`` that /metrics shows now, by their labels."""
    response = requests.get(f"{base}/metrics", timeout=10, headers={
        "Authorization": f"Bearer {p.SECRETS['api_token']}"})
    assert response.status_code == 200, response.text[:500]
    return {line[len(metric):].rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in response.text.splitlines() if line.startswith(metric + "{")}


def test_metrics_under_serve_count_the_rules_a_separate_tick_fired(
        database_url, write_rules, tmp_path):
    """``serve`` sets an idle clock; ``rules-engine tick``, another process, fires it; the
    server's /metrics counts the firing (source timer) beside its own message (web), and
    still after a restart."""
    rules = write_rules(IDLE_RULE)
    process, base = start_server(database_url, 2, tmp_path / "server.log", rules_dir=rules)
    try:
        response = post_signed_event(base, message(0, "visitor-m", 0))
        assert response.json()["results"][0]["status"] == "applied", response.text[:500]
        assert scraped(base, "rules_engine_rules_fired_total") == {}
        assert tick(database_url, rules)[0] == 1
        for _ in range(4):  # whichever worker answers the scrape
            assert scraped(base, "rules_engine_rules_fired_total") == {
                '{rule_id="close-when-idle",source="timer"}': 1.0}
        events = scraped(base, "rules_engine_events_received_total")
        assert events == {
            '{channel="webchat",source="web",status="applied",type="message.received"}': 1.0,
            '{channel="webchat",source="timer",status="applied",type="conversation.idle"}': 1.0}
        assert scraped(base, "rules_engine_actions_total") == {
            '{action="close_conversation",outcome="applied",source="timer"}': 1.0}
    finally:
        stop_server(process)
    process, base = start_server(database_url, 1, tmp_path / "again.log", rules_dir=rules)
    try:  # a new server: its own counts start again, the database's are still there
        assert scraped(base, "rules_engine_rules_fired_total") == {
            '{rule_id="close-when-idle",source="timer"}': 1.0}
        assert all("source=\"web\"" not in labels
                   for labels in scraped(base, "rules_engine_events_received_total"))
    finally:
        stop_server(process)


def test_a_tick_killed_while_firing_loses_nothing_and_fires_nothing_twice(
        database_url, store, write_rules, tmp_path):
    rules = write_rules(IDLE_RULE)
    ingest_messages(database_url, rules, tmp_path, 600)
    assert counts(store)["timers left"] == 600

    killed = subprocess.Popen(cli(database_url, rules, "tick", "--now", NOW), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=environment(), start_new_session=True)
    try:
        first = killed.stdout.readline()  # a batch (one transaction) has been committed
        assert first.startswith("idle:close-when-idle:"), first + killed.stderr.read()
        deadline = time.monotonic() + 20
        while not inside_a_firing_transaction(store, database_url):  # the next batch's
            assert killed.poll() is None, "the tick ended before it could be killed"
            assert time.monotonic() < deadline, "the tick never began another batch"
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        rest = killed.stdout.read()  # (through the buffer readline filled, unlike communicate)
        killed.stderr.close()
        killed.stdout.close()
        killed.wait(timeout=20)
    assert killed.returncode == -signal.SIGKILL
    _, printed = parse_tick(first + rest, finished=False)

    wait_for_dead_transactions(store)
    after_kill = counts(store)
    done = after_kill["timer firings in the ledger"]
    assert 0 < done < 600
    assert len(printed) <= done  # a batch is printed once committed, never before
    assert after_kill == {"timers left": 600 - done, "timer firings in the ledger": done,
                          "timer traces": done, "conversations": 600,
                          "closed by automation": done, "open": 600 - done}
    assert fired_by_timers(store) == done  # what /metrics shows: the committed batches

    fired, lines = tick(database_url, rules)
    assert fired == 600 - done
    assert {status for _, status, _ in lines} == {"applied"}  # none a duplicate
    assert not {timer for timer, _, _ in lines} & {timer for timer, _, _ in printed}
    assert counts(store) == {"timers left": 0, "timer firings in the ledger": 600,
                             "timer traces": 600, "conversations": 600,
                             "closed by automation": 600, "open": 0}
    assert closed_by_their_own_clock(store)
    assert tick(database_url, rules) == (0, [])
    assert fired_by_timers(store) == 600


# Imports the CLI first (the slow part), says it is ready, then waits for the go file.
AT_THE_SAME_MOMENT = """\
import os, sys, time
from rules_engine.cli import main
open(sys.argv[1], "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""


@contextlib.contextmanager
def ticks_waiting(
        database_url: str, rules: Path, folder: Path, count: int, *,
        now: str = NOW) -> Iterator[tuple[Callable[[], None], list[subprocess.Popen[str]]]]:
    """``count`` ``tick --now now`` processes, started now, each waiting once it has imported
    the CLI; ``release()`` waits until all are ready (``ready_ticks``), then lets them go at
    the same instant. Those still running when the block ends are killed."""
    go = folder / "go"
    ticks = [subprocess.Popen(
        [sys.executable, "-c", AT_THE_SAME_MOMENT, str(folder / f"ready-{n}"), str(go),
         *cli(database_url, rules, "tick", "--now", now)[3:]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(),
        start_new_session=True) for n in range(count)]

    def release() -> None:
        ready_ticks(ticks, folder)
        go.touch()

    try:
        yield release, ticks
    finally:
        for t in ticks:
            if t.poll() is None:
                os.killpg(t.pid, signal.SIGKILL)
                t.wait()


def ready_ticks(ticks: list[subprocess.Popen[str]], folder: Path) -> None:
    """Wait until every process of ``ticks_waiting`` has imported the CLI and waits."""
    deadline = time.monotonic() + 60
    while not all((folder / f"ready-{n}").exists() for n in range(len(ticks))):
        dead = [t for t in ticks if t.poll() is not None]
        assert not dead, [t.communicate()[1] for t in dead]
        assert time.monotonic() < deadline, "the tick processes did not get ready"
        time.sleep(0.01)


def tick_outputs(
        ticks: list[subprocess.Popen[str]]) -> list[tuple[int, list[tuple[str, str, str]]]]:
    """Wait for the ticks to end (each successfully): what each fired (``parse_tick``)."""
    outputs = [t.communicate(timeout=120) for t in ticks]
    assert [t.returncode for t in ticks] == [0] * len(ticks), [err for _, err in outputs]
    return [parse_tick(out, finished=True) for out, _ in outputs]


@pytest.mark.skipif(not POSTGRES_URL, reason="only PostgreSQL runs tick processes side by side "
                                             "(SQLite takes one writer at a time)")
def test_four_ticks_started_together_share_the_due_timers_and_fire_each_once(
        database_url, store, write_rules, tmp_path):
    rules = write_rules(IDLE_RULE)
    ingest_messages(database_url, rules, tmp_path, 1000)
    assert counts(store)["timers left"] == 1000

    with ticks_waiting(database_url, rules, tmp_path, 4) as (release, ticks):
        release()
        parsed = tick_outputs(ticks)
    figures = [fired for fired, _ in parsed]
    assert sum(figures) == 1000, figures
    assert sum(1 for fired in figures if fired) > 1, figures  # they shared the work
    every_line = [line for _, lines in parsed for line in lines]
    assert len({timer for timer, _, _ in every_line}) == 1000  # none fired by two processes
    assert {(status, fired_rules) for _, status, fired_rules in every_line} == {
        ("applied", "close-when-idle")}
    assert counts(store) == {"timers left": 0, "timer firings in the ledger": 1000,
                             "timer traces": 1000, "conversations": 1000,
                             "closed by automation": 1000, "open": 0}
    assert closed_by_their_own_clock(store)


@pytest.mark.skipif(not POSTGRES_URL, reason="row locks and deadlocks are PostgreSQL's")
def test_messages_for_contacts_a_tick_is_firing_wait_and_never_deadlock(
        database_url, store, write_rules, tmp_path):
    """A tick holds the contacts of its batch (FOR UPDATE OF contacts) before it touches
    their timers; a message takes its contact first too, then upserts its timer. Same
    order, so a message for a contact late in the tick's batch waits, never deadlocks
    (with the timers locked first it did: PostgreSQL killed one side after a second)."""
    from rules_engine import Engine, load_rule_set, parse_event

    rules = write_rules(IDLE_RULE)
    ingest_messages(database_url, rules, tmp_path, 200)

    def deadlocks() -> int:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            return int(connection.execute(text(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            )).scalar_one())

    before = deadlocks()
    ticking = subprocess.Popen(cli(database_url, rules, "tick", "--now", NOW), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment())
    deadline = time.monotonic() + 20
    while not inside_a_firing_transaction(store, database_url):
        assert ticking.poll() is None and time.monotonic() < deadline, "no firing seen"
    engine = Engine(store, load_rule_set([rules]))
    late = [engine.process(parse_event(message(1, f"person-{n}", 30 * 60)))  # the batch's
            for n in range(199, 194, -1)]                                    # last contacts
    output, errors = ticking.communicate(timeout=120)
    assert ticking.returncode == 0, errors
    assert all(result.status == "applied" for result in late)
    time.sleep(0.7)  # the statistics collector's delay
    assert deadlocks() == before
    fired, _ = parse_tick(output, finished=True)
    assert fired + 5 >= 200  # the late contacts' clocks fired, or were pushed on by them


RACE_CONTACTS = 300
DUE = START + timedelta(hours=24)  # every clock's, set by each contact's first message
RESTART = 24 * 60 - 1  # the racing messages' time (minutes from START): a minute before DUE
# The ticks' connections JIT-compile the one query of theirs that costs this much, the claim
# (with the tables analyzed, it costs over 30, the others under 10): LLVM then spends 50 ms
# (300 ms the first time in a process) between the claim's snapshot and its row locks, the
# window in which a message's commit goes unseen. Unwidened it is about a millisecond, and
# one run in several catches the race (here, one in six).
WIDE_CLAIMS = {"options": "-c jit_above_cost=20"}
MESSAGE_SPACING = 0.01  # seconds between the racing messages' posts
AHEAD = 50  # messages paced from the ticks' release; the rest from the ticks' first close


def first_automation_close(store, ticks: list[subprocess.Popen[str]]) -> float:
    """Wait until a conversation is closed by automation (or every tick has ended): when."""
    query = text("SELECT 1 FROM conversations WHERE close_source = 'automation' LIMIT 1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(t.poll() is None for t in ticks):
        with store.read() as tx:
            if tx.connection.execute(query).first():
                break
        time.sleep(0.005)
    return time.monotonic()


@pytest.mark.skipif(not POSTGRES_URL, reason="only PostgreSQL runs ticks and messages side by "
                                             "side (SQLite takes one writer at a time)")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ticks_racing_messages_never_close_on_a_clock_a_message_moved_on(
        seed, database_url, store, write_rules, tmp_path):
    """Issue 19. Two ticks fire 300 idle clocks, all due at DUE, while the server applies a
    message from half the contacts (the seed's choice and order), dated a minute before DUE:
    each moves its clock on by a day. Events for one contact take its lock one after the
    other, so either the clock fires first (and the message, finding no open conversation,
    opens a new one) or the message does (and the clock, moved past the ticks' time, waits
    on). A message applied to a conversation that a clock then closes is a close on a stale
    due time."""
    rules = write_rules(IDLE_RULE)
    messaged = random.Random(seed).sample(range(RACE_CONTACTS), RACE_CONTACTS // 2)
    ticks_url = make_url(database_url).update_query_dict(WIDE_CLAIMS)
    with ticks_waiting(ticks_url.render_as_string(hide_password=False), rules, tmp_path, 2,
                       now=DUE.isoformat()) as (release, ticks):
        ingest_messages(database_url, rules, tmp_path, RACE_CONTACTS, at_once=True)
        with store.transaction() as tx:
            tx.connection.execute(text("ANALYZE"))  # as autovacuum would, in time
        server, base = start_server(database_url, 2, tmp_path / "server.log", rules_dir=rules)
        ready_ticks(ticks, tmp_path)
        began = time.monotonic()
        first_close: list[float] = []  # when the ticks' first close was seen
        closing = threading.Event()

        def post_in_turn(turn: int, contact: int) -> requests.Response:
            # One message every MESSAGE_SPACING: the first AHEAD from before the ticks' release,
            # the rest from the ticks' first close on, so that messages land while the ticks
            # fire however long the ticks take to start on the machine at hand.
            start = began
            if turn >= AHEAD:
                closing.wait(timeout=60)
                start, turn = (first_close or [began])[0], turn - AHEAD
            time.sleep(max(0.0, start + turn * MESSAGE_SPACING - time.monotonic()))
            return post_signed_event(base, message(1, f"person-{contact}", RESTART))

        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                posted = pool.map(post_in_turn, range(len(messaged)), messaged)
                time.sleep(0.1)  # messages are being applied when the ticks begin
                release()
                first_close.append(first_automation_close(store, ticks))
                closing.set()
                responses = list(posted)
            parsed = tick_outputs(ticks)
        finally:
            stop_server(server)
    assert [r.status_code for r in responses] == [200] * len(messaged)
    applied = [r.json()["results"][0] for r in responses]
    assert {result["status"] for result in applied} == {"applied"}
    # The conversation each message found open -> the message: applied before any close of
    # that conversation (both hold the contact's lock), its clock moved past DUE.
    restarted = {result["conversation_id"]: result["event_id"] for result in applied
                 if not any(c["operation"] == "open_conversation" for c in result["changes"])}

    c, e = tables.conversations, tables.processed_events
    with store.read() as tx:
        closes = tx.connection.execute(select(c.c.id, c.c.closed_by_event)
                                       .where(c.c.close_source == "automation")).all()
        received = dict(tx.connection.execute(select(e.c.event_id, e.c.received_at)).all())
    stale = {close.id: received[close.closed_by_event] - received[restarted[close.id]]
             for close in closes if close.id in restarted}
    assert not stale, (f"{len(stale)} close(s) on a stale due time; each applied this many ms "
                       "after the message that had moved its clock on: "
                       f"{sorted(round(d / timedelta(milliseconds=1)) for d in stale.values())}")

    assert 0 < len(restarted) < len(messaged), "the race did not happen: one side came first"
    every_line = [line for _, lines in parsed for line in lines]
    assert {(status, fired_rules) for _, status, fired_rules in every_line} == {
        ("applied", "close-when-idle")}
    fired = RACE_CONTACTS - len(restarted)
    assert counts(store) == {
        "timers left": len(messaged), "timer firings in the ledger": fired,
        "timer traces": fired, "conversations": RACE_CONTACTS + len(messaged) - len(restarted),
        "closed by automation": fired, "open": len(messaged)}
    assert closed_by_their_own_clock(store)
