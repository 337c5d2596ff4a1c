"""Benchmark: ``rules-engine ingest`` against the database's own speed, side by side.

1. Generates message events (``--events``, from ``--contacts`` contacts on three channels,
   a mix of texts the example rules react to: thanks, refunds, plain questions).
2. Runs ``rules-engine ingest`` on them with the example rules into a fresh SQLite file
   whose schema ``rules-engine db upgrade`` made beforehand (the floor's schema is made
   before its clock starts too), with our modules' bytecode compiled beforehand as an
   installed wheel has it; the whole command is timed, start-up included.
3. The statement-replay floor: the same ingest run once more with every statement it sends
   recorded (``bench/statement_recorder.py``: SQL, parameters, savepoints, commits, in
   order), then Python's ``sqlite3`` alone executing exactly those statements, fetching
   every row they return, in the same transactions, on a fresh copy of the schema with the
   same pragmas. What is left between the two is the engine's own Python.
   One more ingest times every call into the driver (statements, fetches, commits; nothing
   recorded): what SQLite itself took inside the engine's process, against the same
   statements replayed back to back.
4. The rows floor: Python's ``sqlite3`` writing the very rows that ingest wrote (read back
   from its database: the ledger row and trace of each event, the contact and identity it
   created, the conversation it opened or closed, the tags and fields of the contact, the
   outbox rows, the timers it set), one transaction per event, with the same pragmas
   (WAL, synchronous NORMAL, a checkpoint every 10,000 pages), into another fresh file:
   the least any writer of these rows could cost.

Ingest and the replay run in alternating rounds (``--rounds``, 3 by default); prints each
round's rates and the median of the rounds' ratios, for the whole command and without its
start-up (interpreter, imports, rules loaded, store opened: the same command on an empty
file, timed in each round).

    python bench/ingest_floor.py [--events 5000] [--contacts 500] [--rounds 3]
"""
from __future__ import annotations

import argparse
import compileall
import json
import pickle
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEXTS = ["hello, where is my order?", "I want a refund please", "thanks", "thank you!",
         "can I change my address?", "refund for order 42", "ok", "hi"]
CHANNELS = ["facebook", "viber", "webchat"]


def write_events(path: Path, events: int, contacts: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for n in range(events):
            person = rng.randrange(contacts)
            out.write(json.dumps({
                "id": f"bench-{n}", "type": "message.received",
                "channel": CHANNELS[person % len(CHANNELS)],
                "timestamp": f"2026-11-{1 + n * 24 // events:02d}T{n % 24:02d}:{n % 60:02d}:00Z",
                "contact": {"external_id": f"person-{person}", "name": f"Person {person}"},
                "message": {"text": rng.choice(TEXTS)}}) + "\n")


def cli(*arguments: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rules_engine.cli", *arguments],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{arguments} failed: {done.stderr[-2000:]}")
    return elapsed


def upgraded(database: Path) -> str:
    """A fresh database at the current schema; its URL."""
    database.unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    cli("--database-url", url, "db", "upgrade")
    return url


def ingest(events_file: Path, database: Path) -> float:
    url = upgraded(database)
    # The bytecode exists, as in an installed wheel (where PYTHONDONTWRITEBYTECODE is set,
    # an editable install would otherwise compile every module of ours on each start).
    compileall.compile_dir(REPO / "rules_engine", quiet=1)
    return cli("--rules", str(REPO / "rules"), "--database-url", url, "ingest", str(events_file))


def _recorded(events_file: Path, database: Path, recording: Path,
              *options: str) -> tuple[list[tuple[list[tuple[str, object, bool]], float]], float]:
    """One ingest of ``events_file`` under the statement recorder: per connection (steps,
    seconds inside the driver); and the seconds the whole command took."""
    url = upgraded(database)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "bench" / "statement_recorder.py"),
                           *options, str(recording), "--", "--rules", str(REPO / "rules"),
                           "--database-url", url, "ingest", str(events_file)],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the recorded ingest failed: {done.stderr[-2000:]}")
    return ([(steps, seconds) for _, steps, seconds in pickle.loads(recording.read_bytes())],
            elapsed)


def record(events_file: Path, database: Path, recording: Path) -> list[tuple[str, object, bool]]:
    """The statements one ingest of ``events_file`` sends, in order (one connection)."""
    connections = [steps for steps, _ in _recorded(events_file, database, recording)[0] if steps]
    if len(connections) != 1:
        raise SystemExit(f"ingest used {len(connections)} connections; the replay expects one")
    return connections[0]


def time_in_driver(events_file: Path, database: Path, recording: Path) -> tuple[float, float]:
    """Seconds one ingest of ``events_file`` spends inside the driver (statements, fetches,
    commits; nothing recorded), and in all."""
    connections, elapsed = _recorded(events_file, database, recording, "--time-only")
    return sum(seconds for _, seconds in connections), elapsed


def replay(steps: list[tuple[str, object, bool]], database: Path) -> float:
    """``sqlite3`` alone executing the recorded statements, every row fetched."""
    upgraded(database)
    target = sqlite3.connect(database, isolation_level=None)
    started = time.perf_counter()
    for sql, parameters, many in steps:
        if many:
            target.executemany(sql, parameters)  # type: ignore[arg-type]
        else:
            target.execute(sql, parameters).fetchall()  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    target.close()
    return elapsed


def rows_by_event(database: Path) -> tuple[list[str], dict[str, list[tuple[str, dict]]], str]:
    """What ingest wrote, grouped by the event that wrote it; and the schema to recreate."""
    source = sqlite3.connect(database)
    source.row_factory = sqlite3.Row
    schema = ";\n".join(row[0] for row in source.execute(
        "SELECT sql FROM sqlite_master WHERE type IN ('table', 'index') AND sql IS NOT NULL "
        "AND name NOT LIKE 'alembic%'"))
    events = [row["event_id"] for row in source.execute(
        "SELECT event_id FROM processed_events ORDER BY received_at, rowid")]
    grouped: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    first_event_of: dict[int, str] = {}
    for row in source.execute("SELECT * FROM processed_events ORDER BY received_at, rowid"):
        grouped[row["event_id"]].append(("processed_events", dict(row)))
        first_event_of.setdefault(row["contact_id"], row["event_id"])
    for table in ("event_traces",):
        for row in source.execute(f"SELECT * FROM {table}"):
            grouped[row["event_id"]].append((table, dict(row)))
    for row in source.execute("SELECT * FROM contacts"):
        grouped[first_event_of.get(row["id"], events[0])].append(("contacts", dict(row)))
    for table in ("contact_identities", "contact_tags", "contact_fields"):
        for row in source.execute(f"SELECT * FROM {table}"):
            grouped[first_event_of.get(row["contact_id"], events[0])].append((table, dict(row)))
    for row in source.execute("SELECT * FROM conversations"):
        grouped[row["opened_by_event"] or events[0]].append(("conversations", dict(row)))
        if row["closed_by_event"]:  # the close is its own write, in the closing event
            grouped[row["closed_by_event"]].append(("close", dict(row)))
    for row in source.execute("SELECT * FROM outbox"):
        grouped[row["event_id"]].append(("outbox", dict(row)))
    for row in source.execute("SELECT * FROM timers"):  # as last set (a restarted clock:
        grouped[row["set_by_event"]].append(("timers", dict(row)))  # its latest write)
    source.close()
    return events, grouped, schema


def floor(events: list[str], grouped: dict[str, list[tuple[str, dict]]], schema: str,
          database: Path) -> float:
    """The same rows, written by sqlite3 directly, one transaction per event."""
    target = sqlite3.connect(database, isolation_level=None)
    target.execute("PRAGMA journal_mode=WAL")
    target.execute("PRAGMA synchronous=NORMAL")
    target.execute("PRAGMA wal_autocheckpoint=10000")
    target.executescript(schema)
    started = time.perf_counter()
    for event_id in events:
        target.execute("BEGIN IMMEDIATE")
        for table, row in grouped[event_id]:
            if table == "close":
                target.execute("UPDATE conversations SET closed_at = ?, close_source = ?, "
                               "closed_by = ?, resolution_seconds = ? WHERE id = ?",
                               (row["closed_at"], row["close_source"], row["closed_by"],
                                row["resolution_seconds"], row["id"]))
                continue
            if table == "conversations":
                row = {**row, "closed_at": None, "close_source": None, "closed_by": None,
                       "resolution_seconds": None}
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            target.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))
        target.execute("COMMIT")
    elapsed = time.perf_counter() - started
    target.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        events_file = folder / "events.jsonl"
        write_events(events_file, args.events, args.contacts)
        steps = record(events_file, folder / "recorded.db", folder / "recording.pickle")
        print(f"{args.events:,} message events from {args.contacts:,} contacts, example rules, "
              f"SQLite (WAL, synchronous NORMAL); {len(steps):,} statements recorded")
        print(f"{'round':<7}{'ingest events/s':>16}{'replay events/s':>17}{'ratio':>8}"
              f"{'start-up s':>12}{'ratio without it':>18}")
        ratios, without_start = [], []
        empty = folder / "empty.jsonl"
        empty.touch()
        for number in range(1, args.rounds + 1):
            ours = ingest(events_file, folder / "ours.db")
            floor_time = replay(steps, folder / "replay.db")
            start_up = ingest(empty, folder / "empty.db")
            ratios.append(floor_time / ours)
            without_start.append(floor_time / (ours - start_up))
            print(f"{number:<7}{args.events / ours:>16,.0f}{args.events / floor_time:>17,.0f}"
                  f"{ratios[-1]:>8.3f}{start_up:>12.2f}{without_start[-1]:>18.3f}")
        last_replay = floor_time
        in_driver, timed = time_in_driver(events_file, folder / "timed.db",
                                          folder / "timed.pickle")
        events, grouped, schema = rows_by_event(folder / "ours.db")
        rows_time = floor(events, grouped, schema, folder / "floor.db")
        rows = sum(len(group) for group in grouped.values())
    print(f"median ratio ingest / statement replay: {statistics.median(ratios):.3f} (whole "
          f"command); {statistics.median(without_start):.3f} without its start-up (the same "
          "command on an empty file, timed in each round)")
    python_now = timed - start_up - in_driver  # the engine's own work, without start-up
    allowed = 2 * last_replay - in_driver  # what 0.5 of the replay would leave it
    print(f"inside sqlite3 during one more ingest (calls into the driver timed, nothing "
          f"recorded): {in_driver:.2f} s for the statements the last replay ran in "
          f"{last_replay:.2f} s ({in_driver / last_replay:.2f}x: SQLite itself runs slower "
          f"with the engine's Python between its calls); the engine's own Python: "
          f"{python_now:.2f} s ({timed:.2f} s in all, less start-up and the driver). For 0.5 "
          f"without start-up it could take at most {max(allowed, 0):.2f} s, "
          f"{max(allowed, 0) / python_now:.0%} of that")
    print(f"rows floor ({rows:,} rows written by sqlite3, 1 tx per event): "
          f"{args.events / rows_time:,.0f} events/s; last ingest / rows floor "
          f"{rows_time / ours:.3f}")


if __name__ == "__main__":
    main()
