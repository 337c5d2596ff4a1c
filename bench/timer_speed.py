"""Benchmark: durable timers on SQLite (WAL, synchronous NORMAL), with the rule

    - id: close-when-idle
      trigger: {event: conversation.idle, for: 24h}
      actions: [{close_conversation: {note: idle}}]

1. Firing: ``--timers`` contacts (default 100,000) each send one message with a January
   2026 timestamp, applied by ``Engine.process_many`` (1,000 events per transaction), so
   that every open conversation has an idle clock due by February. Then one
   ``rules-engine tick --now 2026-02-01T00:00:00Z`` fires them all; the whole command is
   timed (start-up included; a tick with nothing due gives that start-up on its own), and
   the store is checked afterwards (no timer left, one ledger row per firing).
2. Incoming events against pending timers: ``--contacts`` contacts (default 10,000) with
   an open conversation each; ``--events`` message events from them (default 3,000; each
   restarts its conversation's idle clock: an upsert into ``timers``) go through
   ``Engine.process`` one at a time, timed; then ``--pending`` timer rows (default
   1,000,000) due in 2027-2030 are inserted with sqlite3 (waits of 20 follow-up rules, as
   the engine writes them, on the same contacts and conversations), and the same number of
   new message events are timed again (3 rounds a side, the median round counts; each side
   warmed up first with 500 events, not timed). The ratio of the two costs per event must
   stay near 1: an event's cost must not grow with the timers waiting in the store.

    python bench/timer_speed.py [--timers 100000] [--pending 1000000] [--contacts 10000]
                                [--events 3000]
    python bench/timer_speed.py --timers 5000 --pending 50000 --contacts 2000   # quick
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rules_engine import (
    Engine,
    Event,
    RulesEngineError,
    Store,
    load_rule_set,
    parse_event,
)
from rules_engine.domain.timers import wait_timer_id

IDLE_RULE = """\
rules:
  - id: close-when-idle
    trigger: {event: conversation.idle, for: 24h}
    actions: [{close_conversation: {note: idle}}]
"""
START = datetime(2026, 1, 1, tzinfo=UTC)
NOW = "2026-02-01T00:00:00Z"  # every idle clock of part 1 is due by then
CHANNELS = ["facebook", "viber", "webchat"]
BATCH = 1_000  # events per process_many transaction while setting up
WARM_UP = 500
ROUNDS = 3


def message(event_id: str, person: int, at: datetime) -> Event:
    return parse_event({
        "id": event_id, "type": "message.received", "channel": CHANNELS[person % 3],
        "timestamp": at.isoformat(), "contact": {"external_id": f"person-{person}"},
        "message": {"text": f"hello from {person}"}})


def open_conversations(engine: Engine, contacts: int) -> float:
    """One message per contact (its conversation opens, its idle clock starts); seconds."""
    started = time.perf_counter()
    for first in range(0, contacts, BATCH):
        events = [message(f"open-{n}", n, START + timedelta(seconds=n))
                  for n in range(first, min(first + BATCH, contacts))]
        refused = [o for o in engine.process_many(events) if isinstance(o, RulesEngineError)]
        if refused:
            raise SystemExit(f"events refused while setting up: {refused[:3]}")
    return time.perf_counter() - started


def tick(rules: Path, url: str, now: str, output: Path) -> tuple[float, int]:
    """The whole ``rules-engine tick`` command: (seconds, its "fired N")."""
    started = time.perf_counter()
    with output.open("w", encoding="utf-8") as out:
        done = subprocess.run([sys.executable, "-m", "rules_engine.cli", "--rules", str(rules),
                               "--database-url", url, "tick", "--now", now],
                              stdout=out, stderr=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tick failed: {done.stderr[-2000:]}")
    last = output.read_text(encoding="utf-8").splitlines()[-1]
    fired = re.search(r"\bfired (\d+) timers?\b", last)  # "tick: fired 2 timers (...) due by"
    if fired is None:
        raise SystemExit(f"tick printed no count of timers fired: {last!r}")
    return elapsed, int(fired.group(1))


def firing(workdir: Path, rules: Path, timers: int) -> None:
    database = workdir / "firing.db"
    url = f"sqlite:///{database}"
    store = Store(url)
    engine = Engine(store, load_rule_set([rules]))
    setup = open_conversations(engine, timers)
    store.dispose()
    idle, nothing = tick(rules, url, "2026-01-01T00:00:00Z", workdir / "tick-0.txt")
    elapsed, fired = tick(rules, url, NOW, workdir / "tick.txt")
    check = sqlite3.connect(database)
    left = check.execute("SELECT count(*) FROM timers").fetchone()[0]
    ledger = check.execute("SELECT count(*) FROM processed_events "
                           "WHERE event_id LIKE 'timer:%'").fetchone()[0]
    closed = check.execute("SELECT count(*) FROM conversations "
                           "WHERE close_source = 'automation'").fetchone()[0]
    check.close()
    if (nothing, fired, left, ledger, closed) != (0, timers, 0, timers, timers):
        raise SystemExit(f"wrong outcome: fired {fired} (and {nothing} before due), {left} "
                         f"timers left, {ledger} ledger rows, {closed} closed")
    print(f"1. firing {timers:,} due idle clocks with one `rules-engine tick` (SQLite)")
    print(f"  {'setting them (process_many, 1,000/tx)':<44}{setup:9.1f} s"
          f"{timers / setup:12,.0f} events/s")
    print(f"  {'tick with nothing due (start-up alone)':<44}{idle:9.2f} s")
    print(f"  {'tick firing all of them (whole command)':<44}{elapsed:9.1f} s"
          f"{timers / elapsed:12,.0f} timers/s")
    print(f"  {'  without the start-up':<44}{elapsed - idle:9.1f} s"
          f"{timers / (elapsed - idle):12,.0f} timers/s")
    print(f"  checked: {timers:,} conversations closed by automation, {ledger:,} firings in "
          f"the ledger, {left} timers left")


def rate(engine: Engine, contacts: int, events: int, label: str, at: datetime) -> list[float]:
    """Events per second of ``Engine.process`` (one transaction each), over ROUNDS rounds
    after a warm-up; messages from existing contacts, each restarting its idle clock."""
    rng = random.Random(label)
    batch = [message(f"{label}-{n}", rng.randrange(contacts), at + timedelta(seconds=n))
             for n in range(WARM_UP + events)]
    for event in batch[:WARM_UP]:
        engine.process(event)
    rates = []
    per_round = events // ROUNDS
    for first in range(WARM_UP, WARM_UP + per_round * ROUNDS, per_round):
        started = time.perf_counter()
        for event in batch[first:first + per_round]:
            result = engine.process(event)
            assert result.status == "applied"
        rates.append(per_round / (time.perf_counter() - started))
    return rates


def insert_pending(database: Path, pending: int, contacts: int) -> float:
    """``pending`` wait timers due in 2027-2030, rows as the engine writes them (its SQLite
    formats: text timestamps, compact JSON), spread over the contacts' conversations;
    seconds taken."""
    source = sqlite3.connect(database)
    owners = source.execute("SELECT contact_id, id, channel FROM conversations "
                            "WHERE closed_at IS NULL ORDER BY id").fetchall()
    rng = random.Random(11)
    started = time.perf_counter()
    chunk = 50_000
    for first in range(0, pending, chunk):
        rows = []
        for n in range(first, min(first + chunk, pending)):
            contact_id, conversation_id, channel = owners[n % len(owners)]
            rule = f"follow-up-{n % 20}"
            event_id = f"pending-{n}"
            due = datetime(2027, 1, 1) + timedelta(seconds=rng.randrange(4 * 365 * 86400))
            payload = {"resume": 1, "if": None, "digest": "e6452c3efbb4a6c2",
                       "trigger": "message.received", "channel": channel,
                       "message": {"id": None, "text": "any news?", "quick_reply": None,
                                   "postback": None, "attachments": [], "reply_to": None,
                                   "edited": False},
                       "params": {}, "for": "30d"}
            rows.append((wait_timer_id(event_id, rule, 1),
                         "wait", contact_id, conversation_id, rule,
                         due.strftime("%Y-%m-%d %H:%M:%S.%f"), event_id,
                         json.dumps(payload, separators=(",", ":"))))
        with source:
            source.executemany("INSERT INTO timers (id, kind, contact_id, conversation_id, "
                               "rule_id, due_at, set_by_event, payload) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    elapsed = time.perf_counter() - started
    source.close()
    return elapsed


def incoming(workdir: Path, rules: Path, contacts: int, events: int, pending: int) -> None:
    database = workdir / "incoming.db"
    store = Store(f"sqlite:///{database}")
    engine = Engine(store, load_rule_set([rules]))
    open_conversations(engine, contacts)
    engine.catalog(engine.rules)  # once per rule-set version, not per event

    def timers_held() -> int:
        with sqlite3.connect(database) as check:
            return check.execute("SELECT count(*) FROM timers").fetchone()[0]

    before_timers = timers_held()
    before = rate(engine, contacts, events, "before", START + timedelta(hours=4))
    inserted = insert_pending(database, pending, contacts)
    after_timers = timers_held()
    after = rate(engine, contacts, events, "after", START + timedelta(hours=8))
    store.dispose()
    size = database.stat().st_size / 2**20
    without, with_pending = statistics.median(before), statistics.median(after)
    print(f"\n2. Engine.process of a message (existing contact; it restarts its idle clock), "
          f"{contacts:,} contacts, {events:,} events per side in {ROUNDS} rounds "
          f"(median round)")
    print(f"  {'pending timers':<46}{'events/s':>9}  rounds")
    own = f"{before_timers:,} (the contacts' own idle clocks)"
    added = f"{after_timers:,} (+{pending:,} waits due 2027-2030)"
    print(f"  {own:<46}{without:9,.0f}  " + " ".join(f"{r:,.0f}" for r in before))
    print(f"  {added:<46}{with_pending:9,.0f}  " + " ".join(f"{r:,.0f}" for r in after))
    print(f"  {'cost of an event, with / without them':<46}{without / with_pending:9.3f}")
    print(f"  inserting the pending rows (sqlite3, 50,000 per tx): {inserted:.1f} s; "
          f"database {size:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=100_000,
                        help="due idle clocks one tick fires (part 1)")
    parser.add_argument("--pending", type=int, default=1_000_000,
                        help="timer rows not due, added for part 2")
    parser.add_argument("--contacts", type=int, default=10_000,
                        help="contacts (open conversations) of part 2")
    parser.add_argument("--events", type=int, default=3_000,
                        help="message events timed on each side of part 2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        rules = workdir / "rules"
        rules.mkdir()
        (rules / "idle.yaml").write_text(IDLE_RULE, "utf-8")
        firing(workdir, rules, args.timers)
        incoming(workdir, rules, args.contacts, args.events, args.pending)


if __name__ == "__main__":
    main()
