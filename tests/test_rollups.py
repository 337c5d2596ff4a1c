"""The report rollups against the exact computation: histories generated from a seed and
driven through the engine (every open and close source, reopens, merges, idle timers,
reassignments after the first response), reports over ranges that cut days, the rollups kept
event by event against those rebuilt from the rows; the rebuild command and the migration
that fills the rollups of an existing database. SQLite, or PostgreSQL when
RULES_ENGINE_TEST_DATABASE_URL is set (tests/conftest.py)."""
from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy import event as sqlalchemy_events

from rules_engine import Engine, RulesEngineError, Store
from rules_engine.domain.durations import FIRST_RESPONSE_BUCKETS, RELATIVE_ERROR, Summary
from rules_engine.domain.model import CloseSource
from rules_engine.metrics import (
    GroupBy,
    ReportQuery,
    conversation_report,
    dashboard_reports,
    exact_report,
)
from rules_engine.store import tables
from rules_engine.store.prepared import Prepared

from .conftest import T0, event
from .test_metrics import assert_within_error

RULES = """\
rules:
  - id: route-billing
    trigger: {event: message.received}
    conditions: ["message.text == 'billing'"]
    actions: [{assign: {team: billing}}]
  - id: route-support
    trigger: {event: message.received}
    conditions: ["message.text == 'support'"]
    actions: [{assign: {user: maria}}]
  - id: later
    trigger: {event: message.received}
    conditions: ["message.text == 'later'"]
    actions: [{unassign: {team: true}}]
  - id: bye
    trigger: {event: message.received}
    conditions: ["message.text == 'bye'"]
    actions: [{close_conversation: {note: bye}}]
  - id: call-back
    trigger: {event: contact.tag_added}
    actions: [{open_conversation: {team: onboarding}}]
  - id: close-when-idle
    trigger: {event: conversation.idle, for: 20h}
    actions: [{close_conversation: {note: idle}}]
"""
CHANNELS = ("facebook", "viber", "whatsapp")  # each has welcome events


class History:
    """Events from a seed, applied to the engine in time order."""

    def __init__(self, engine: Engine, seed: int, contacts: int) -> None:
        self.engine, self.rng = engine, random.Random(seed)
        self.people = [(CHANNELS[n % 3], f"p{seed}-{n}") for n in range(contacts)]
        self.ids: dict[str, int] = {}
        self.minutes = 0.0

    def apply(self, kind: str, **fields: Any) -> None:
        built = event(kind, minutes=self.minutes, **fields)
        try:
            result = self.engine.process(built)
        except RulesEngineError:
            return  # e.g. a merge of a contact merged before: refused, nothing written
        contact = fields.get("contact", {})
        if "external_id" in contact and result.contact_id is not None:
            self.ids.setdefault(contact["external_id"], result.contact_id)

    def step(self) -> None:
        rng = self.rng
        self.minutes += rng.choice((1, 5, 30, 90, 240, 600))
        channel, person = rng.choice(self.people)
        contact = {"external_id": person}
        kind = rng.choices(("message", "welcome", "reply", "open", "close", "dialogflow",
                            "merge", "tick"), weights=(30, 4, 20, 5, 8, 6, 3, 6))[0]
        if kind == "message":
            self.apply("message.received", channel=channel, contact=contact,
                       message={"text": rng.choice(("hi", "billing", "support", "bye", "later", "hi"))})
        elif kind == "welcome":
            self.apply("welcome", channel=channel, contact=contact)
        elif kind == "reply":
            self.apply("message.sent", channel=channel, contact=contact,
                       actor=rng.choice(("susan", "tom", "bot")), message={"text": "hello"})
        elif person in self.ids and kind == "open":
            self.apply("conversation.open", contact={"id": self.ids[person]}, actor="maria",
                       params={"assignee": rng.choice(("maria", "nina")), "team": "support"})
        elif person in self.ids and kind == "close":
            self.apply("conversation.close", contact={"id": self.ids[person]}, actor="maria")
        elif kind == "dialogflow":
            done = rng.random() < 0.8
            self.apply("dialogflow.fulfillment", channel=channel, contact=contact,
                       params={"RB_MARKDONE": "true" if done else "false",
                               **({"RB_ADDTAGS": "callback"} if rng.random() < 0.3 else {})})
        elif person in self.ids and kind == "merge":
            other_channel, other = rng.choice(self.people)
            if other != person:
                self.apply("contacts.merge", contact={"id": self.ids[person]}, actor="maria",
                           secondary_contact={"channel": other_channel, "external_id": other})
        elif kind == "tick":
            now = T0 + timedelta(minutes=self.minutes)
            while self.engine.fire_due(now):
                pass


def stored_rollups(store: Store) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Every rollup row that counts something, as kept."""
    r = tables.report_rollups
    with store.read() as tx:
        rows = tx.connection.execute(select(r).where(r.c.count != 0)).all()
    return {tuple(row[:5]): (row.count, row.seconds, bytes(row.buckets), row.sketch_offset,
                             bytes(row.sketch)) for row in rows}


def assert_report_agrees(rolled: dict[str, Any], exact: dict[str, Any]) -> None:
    """Counts, means, distributions and open figures equal; medians, p90s and maxima within
    the stated error."""
    assert rolled["distribution"] == exact["distribution"]
    assert rolled["first_response_distribution"] == exact["first_response_distribution"]
    assert [group["key"] for group in rolled["groups"]] == [group["key"] for group in exact["groups"]]
    for ours, theirs in zip([rolled["totals"], *rolled["groups"]], [exact["totals"], *exact["groups"]]):
        for name in ("closed", "responded", "open_now", "open_age_seconds"):
            assert ours[name] == theirs[name], name
        assert_within_error(ours["resolution_seconds"], theirs["resolution_seconds"])
        assert_within_error(ours["first_response_seconds"], theirs["first_response_seconds"])


def ranges(rng: random.Random, days: int) -> list[tuple[datetime, datetime]]:
    """The whole history, whole days, and ranges that cut days at random hours."""
    start = T0.replace(hour=0)
    chosen = [(start, start + timedelta(days=days + 1)),
              (start + timedelta(days=1), start + timedelta(days=days - 1))]
    for _ in range(4):
        since = T0 + timedelta(minutes=rng.uniform(-600, days * 1440 / 2))
        chosen.append((since, since + timedelta(minutes=rng.uniform(1500, days * 1440))))
    return chosen


@pytest.mark.parametrize("seed", [1, 2])
def test_rollups_kept_by_the_engine_agree_with_the_exact_report(make_engine, store, seed):
    history = History(make_engine(RULES), seed, contacts=12)
    for _ in range(450):
        history.step()
    days = int(history.minutes // 1440) + 1
    c = tables.conversations.c
    with store.read() as tx:
        rows = tx.connection.execute(select(c.open_source, c.close_source, c.closing_note)).all()
    assert {row.open_source for row in rows} == {"incoming_message", "welcome_event", "user",
                                                 "automation"}
    assert {row.close_source for row in rows} >= {"user", "automation", "dialogflow",
                                                  "contact_merge"}
    assert {row.closing_note for row in rows} >= {"bye", "idle"}  # a rule's, an idle timer's
    now = T0 + timedelta(minutes=history.minutes)
    for since, until in ranges(random.Random(seed), days):
        for by in GroupBy:
            query = ReportQuery(since, until, by)
            assert_report_agrees(conversation_report(store, query, now=now),
                                 exact_report(store, query, now=now))
        query = ReportQuery(since, until, GroupBy.TEAM, {"team": "support"})
        assert_report_agrees(conversation_report(store, query, now=now),
                             exact_report(store, query, now=now))
    kept = stored_rollups(store)
    store.run(lambda tx: tx.rebuild_rollups())
    assert kept == stored_rollups(store)  # event by event, exactly what the rows give


def test_a_reassignment_after_the_first_response_moves_it(make_engine, store):
    engine = make_engine(RULES)
    engine.process(event("message.received", channel="viber", contact={"external_id": "a"},
                         message={"text": "support"}))  # to maria
    engine.process(event("message.sent", channel="viber", contact={"external_id": "a"},
                         actor="susan", message={"text": "hello"}, minutes=3))
    engine.process(event("message.received", channel="viber", contact={"external_id": "a"},
                         message={"text": "billing"}, minutes=4))  # to team billing
    day = ReportQuery(T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=1), GroupBy.TEAM)
    groups = conversation_report(store, day, now=T0 + timedelta(hours=1))["groups"]
    assert [(g["key"], g["responded"]) for g in groups] == [("billing", 1)]  # not None's
    assert groups[0]["first_response_seconds"]["median"] == 179.491  # 180 s, within 1%
    engine.process(event("message.received", channel="viber", contact={"external_id": "a"},
                         message={"text": "later"}, minutes=5))  # no user, no team
    groups = conversation_report(store, day, now=T0 + timedelta(hours=1))["groups"]
    assert [(g["key"], g["responded"]) for g in groups] == [(None, 1)]
    closed = engine.process(event("conversation.close", contact={"external_id": "a"},
                                  channel="viber", actor="maria", minutes=30))
    assert closed.changes
    by_source = conversation_report(store, ReportQuery(day.since, day.until,
                                                       GroupBy.CLOSE_SOURCE), now=T0)["groups"]
    assert [(g["key"], g["responded"], g["closed"]) for g in by_source] == [("user", 1, 1)]


def test_a_savepoint_rolled_back_takes_its_rollup_changes_back(make_engine, store):
    engine = make_engine()
    contact = engine.process(event("message.received", channel="viber",
                                   contact={"external_id": "a"}, message={"text": "hi"})).contact_id
    with store.transaction() as tx:
        conversation = tx.open_conversation_of(contact)
        assert conversation is not None
        with pytest.raises(ZeroDivisionError), tx.savepoint():
            tx.close_conversation(conversation.id, source=CloseSource.USER, actor="x",
                                  at=T0 + timedelta(minutes=5), event_id=None,
                                  resolution_seconds=300)
            raise ZeroDivisionError
    assert stored_rollups(store) == {}


def test_the_dashboard_reads_every_slice_as_the_reports_do(make_engine, store):
    history = History(make_engine(RULES), 5, contacts=10)
    for _ in range(250):
        history.step()
    now = T0 + timedelta(minutes=history.minutes)
    query = ReportQuery(T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=8))
    totals, slices, per_day = dashboard_reports(store, query, now=now)
    assert totals == conversation_report(store, query, now=now)
    for by, report in slices.items():
        assert report == conversation_report(store, ReportQuery(query.since, query.until, by),
                                             now=now)
    exact = exact_report(store, ReportQuery(query.since, query.until, GroupBy.DAY), now=now)
    assert {d["day"]: d["closed"] for d in per_day if d["closed"]} == {
        g["key"]: g["closed"] for g in exact["groups"] if g["closed"]}
    assert len(per_day) == 8


def sqlite_url(tmp_path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def test_the_migration_fills_the_rollups_of_an_existing_database(tmp_path):
    url = sqlite_url(tmp_path, "old.db")
    old = Store(url, migrate=False, verify=False)
    old.upgrade("0010")
    with old.engine.begin() as connection:  # conversations written before rollups existed
        connection.execute(tables.contacts.insert().values(id=1, name="a", created_at=T0))
        connection.execute(tables.conversations.insert(), [
            {"contact_id": 1, "channel": "viber", "opened_at": T0 + timedelta(days=n),
             "open_source": "incoming_message", "assignee": "lee", "team": "billing",
             "bot_active": True, "closed_at": T0 + timedelta(days=n, minutes=10 + n),
             "resolution_seconds": 600 + 60 * n, "close_source": "user",
             "first_response_at": T0 + timedelta(days=n, minutes=2),
             "first_response_seconds": 120} for n in range(5)])
    old.dispose()
    store = Store(url)  # a SQLite file is migrated when opened
    query = ReportQuery(T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=5), GroupBy.USER)
    report = conversation_report(store, query, now=T0 + timedelta(days=6))
    assert [(g["key"], g["closed"], g["responded"]) for g in report["groups"]] == [("lee", 5, 5)]
    assert report["totals"]["resolution_seconds"]["mean"] == 720.0
    kept = stored_rollups(store)
    store.run(lambda tx: tx.rebuild_rollups())
    assert kept == stored_rollups(store) and len(kept) == 2 * 6 * 5
    store.dispose()


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rules_engine.cli", *argv], capture_output=True,
                          text=True, timeout=120)


def test_rebuild_rollups_command_rebuilds_them_from_the_conversations(tmp_path):
    url = sqlite_url(tmp_path, "store.db")
    made = cli("--database-url", url, "demo-data", "--conversations", "400", "--days", "20")
    assert made.returncode == 0, made.stderr
    store = Store(url)
    kept = stored_rollups(store)
    assert kept  # demo-data rebuilt them
    with store.transaction() as tx:
        tx.connection.execute(delete(tables.report_rollups))
    store.dispose()
    done = cli("--database-url", url, "db", "rebuild-rollups")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "store.db") as connection:
        closed, answered = connection.execute(
            "SELECT count(closed_at), count(first_response_at) FROM conversations").fetchone()
    assert done.stdout.startswith(f"rebuilt the report rollups from {closed} closed and "
                                  f"{answered} first-answered conversations: {len(kept)} rows, "
                                  "in one transaction, in ")
    store = Store(url)
    assert stored_rollups(store) == kept
    store.dispose()


def test_rebuild_rollups_needs_a_database(tmp_path):
    done = cli("--database-url", sqlite_url(tmp_path, "missing.db"), "db", "rebuild-rollups")
    assert done.returncode == 2 and "no database at" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_rollups_days_are_utc_days(make_engine, store):
    """A conversation closed at 23:30 UTC counts on that day, whatever the range's zone."""
    engine = make_engine()
    late = datetime(2026, 11, 2, 23, 0, tzinfo=timezone.utc)
    engine.process(event("message.received", channel="viber", contact={"external_id": "a"},
                         message={"text": "hi"}, minutes=(late - T0).total_seconds() / 60))
    engine.process(event("conversation.close", contact={"external_id": "a"}, channel="viber",
                         actor="maria", minutes=(late - T0).total_seconds() / 60 + 30))
    query = ReportQuery(datetime(2026, 11, 1, tzinfo=timezone.utc),
                        datetime(2026, 11, 5, tzinfo=timezone.utc), GroupBy.DAY)
    groups = conversation_report(store, query, now=late + timedelta(days=1))["groups"]
    assert [(g["key"], g["closed"]) for g in groups] == [("2026-11-02", 1)]


def test_concurrent_batches_keep_the_rollups_exact_without_a_deadlock(make_engine, store):
    """Four threads apply batches (one transaction each) that open, answer, reassign and
    close conversations counted in the same rollup rows; on PostgreSQL they really run side
    by side, and the server counts no deadlock (the rows are locked in one order)."""
    engine = make_engine(RULES)

    def deadlocks() -> int:
        if store.dialect != "postgresql":
            return 0
        with store.read() as tx:
            return tx.connection.execute(select(text(
                "deadlocks FROM pg_stat_database WHERE datname = current_database()"))).scalar_one()

    def batches(worker: int) -> list[str]:
        failures = []
        for round_ in range(8):
            events = []
            for n in range(6):
                person = {"external_id": f"w{worker}-{round_}-{n}"}
                channel = CHANNELS[n % 3]
                events += [
                    event("message.received", channel=channel, contact=person,
                          message={"text": "support"}, minutes=round_),
                    event("message.sent", channel=channel, contact=person, actor="susan",
                          message={"text": "hello"}, minutes=round_ + 1 + n),
                    event("message.received", channel=channel, contact=person,
                          message={"text": "billing"}, minutes=round_ + 20),
                    event("message.received", channel=channel, contact=person,
                          message={"text": "bye"}, minutes=round_ + 30 + n)]
            failures += [str(result) for result in engine.process_many(events)
                         if isinstance(result, RulesEngineError)]
        return failures

    before = deadlocks()
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(batches, range(4))) == [[]] * 4
    assert deadlocks() == before
    day = ReportQuery(T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=1), GroupBy.TEAM)
    groups = conversation_report(store, day, now=T0 + timedelta(days=1))["groups"]
    assert [(g["key"], g["closed"], g["responded"]) for g in groups] == [("billing", 192, 192)]
    kept = stored_rollups(store)
    store.run(lambda tx: tx.rebuild_rollups())
    assert kept == stored_rollups(store)


def test_the_sketch_is_exact_to_50_seconds_and_within_1_percent_beyond():
    rng = random.Random(4)
    for seconds in [*range(0, 51), *(rng.randrange(51, 10 ** 9) for _ in range(20_000))]:
        summary = Summary(len(FIRST_RESPONSE_BUCKETS))
        summary.add(seconds, FIRST_RESPONSE_BUCKETS)
        value = summary.quantile(0.5)
        assert value == summary.maximum
        if seconds <= 50:
            assert value == seconds
        else:
            assert abs(value - seconds) <= RELATIVE_ERROR * seconds, seconds


def test_a_range_within_a_day_and_two_filters_are_exact(make_engine, store):
    history = History(make_engine(RULES), 3, contacts=8)
    for _ in range(200):
        history.step()
    now = T0 + timedelta(minutes=history.minutes)
    for query in (ReportQuery(T0, T0 + timedelta(hours=20), GroupBy.USER),
                  ReportQuery(T0, now, GroupBy.CHANNEL, {"team": "billing", "user": "maria"}),
                  ReportQuery(T0, now, GroupBy.CHANNEL, {"team": "billing"})):
        assert conversation_report(store, query, now=now) == exact_report(store, query, now=now)


def test_the_dashboard_reads_in_two_statements_one_on_the_rollups(make_engine, store):
    history = History(make_engine(RULES), 6, contacts=8)
    for _ in range(150):
        history.step()
    statements: list[str] = []

    def listen(connection, cursor, statement, *rest) -> None:
        statements.append(statement)

    query = ReportQuery(T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=7))
    sqlalchemy_events.listen(store.engine, "before_cursor_execute", listen)
    try:
        dashboard_reports(store, query, now=T0 + timedelta(days=7))
    finally:
        sqlalchemy_events.remove(store.engine, "before_cursor_execute", listen)
    assert len(statements) == 2
    assert "FROM report_rollups" in statements[0] and "FROM conversations" in statements[1]
    assert "FROM conversations" not in statements[0]


def test_a_transactions_rollups_are_written_in_three_statements(make_engine, store, monkeypatch):
    engine = make_engine()
    contacts = [engine.process(event("message.received", channel=CHANNELS[n % 3],
                                     contact={"external_id": f"c{n}"}, message={"text": "hi"},
                                     minutes=n)).contact_id for n in range(5)]
    calls: list[str] = []
    for method in ("rows", "first", "count", "many"):
        original = getattr(Prepared, method)

        def counted(self, *args, _original=original, **kwargs):
            calls.append(self.sql)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(Prepared, method, counted)
    with store.transaction() as tx:
        for n, contact in enumerate(contacts):
            conversation = tx.open_conversation_of(contact)
            answered = tx.record_reply(conversation, at=T0 + timedelta(minutes=10 + n),
                                       first_response=True)
            tx.assign(answered, assignee="lee", team="billing")
            tx.close_conversation(conversation.id, source=CloseSource.USER, actor="lee",
                                  at=T0 + timedelta(minutes=30 + n), event_id=None,
                                  resolution_seconds=1800)
        calls.clear()
        tx.flush_rollups()
        assert len(calls) == 3
    assert stored_rollups(store)
