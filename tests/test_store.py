"""The store itself: migrations match the tables, an old schema is refused, repeats apply once."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from rules_engine import Store
from rules_engine.store import StoreNotReady
from rules_engine.store.tables import metadata

from .conftest import POSTGRES_URL, T0, message
from .test_validation import run_cli


def test_the_migrations_build_exactly_the_declared_tables(store):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_the_store_knows_the_newest_migration_without_alembic(store, database_url):
    """SCHEMA_REVISION lets an up-to-date store open without importing Alembic: it must be
    Alembic's head, or a store would skip a migration it needs."""
    from rules_engine.store.store import SCHEMA_REVISION

    assert store.revisions() == (SCHEMA_REVISION, SCHEMA_REVISION)
    from alembic import command

    with store.engine.begin() as connection:  # a database of an older release
        command.downgrade(store._alembic(connection), "0003")
    assert store.revisions()[0] == "0003"
    Store(database_url, migrate=True).dispose()  # behind: migrated, not skipped
    assert store.revisions()[0] == SCHEMA_REVISION
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM timers")).scalar() == 0


def test_a_store_whose_schema_is_behind_is_refused(store, database_url):
    _, head = store.revisions()
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    with pytest.raises(StoreNotReady, match="rules-engine db upgrade"):
        Store(database_url, migrate=False)
    status, output = run_cli("--database-url", database_url, "db", "current")
    assert status == 1 and f"revision 0001 (newest {head})" in output
    with store.engine.begin() as connection:  # the tables are all there: just mark it current
        connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    status, output = run_cli("--database-url", database_url, "db", "current")
    assert status == 0 and "up to date" in output


def test_the_same_hundred_events_delivered_twice_concurrently_apply_once(make_engine, store):
    engine = make_engine("""
        rules:
          - id: count-messages
            trigger: {event: message.received}
            actions: [{add_tag: {tag: seen}}]
    """)
    events = [message(f"c-{n % 20}", f"hello {n}", id=f"twice-{n}") for n in range(100)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(engine.process, events + events))
    statuses = {}
    for result in results:
        statuses.setdefault(result.event_id, []).append(result.status)
    assert all(sorted(s) == ["applied", "duplicate"] for s in statuses.values())
    with store.read() as tx:
        processed = tx.connection.execute(text("SELECT count(*) FROM processed_events")).scalar()
        traces = tx.connection.execute(text("SELECT count(*) FROM event_traces")).scalar()
        open_now = tx.connection.execute(
            text("SELECT count(*) FROM conversations WHERE closed_at IS NULL")).scalar()
    assert (processed, traces, open_now) == (100, 100, 20)


@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL only (the suite's PostgreSQL run)")
def test_postgres_is_the_store_under_test(store):
    assert store.dialect == "postgresql"


def test_sqlite_writers_queue_on_the_writer_lock_across_processes(tmp_path):
    """A transaction waits while another process holds the writer lock, starts as soon as
    it is released, and an error inside a transaction releases it."""
    import subprocess
    import sys
    import time

    database = tmp_path / "locked.db"
    store = Store(f"sqlite:///{database}")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path\n"
        "from rules_engine.store.writer_lock import WriterLock\n"
        f"with WriterLock(Path({str(database)!r})).held():\n"
        "    print('held', flush=True); time.sleep(1.0)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with store.transaction() as tx:
        waited = time.monotonic() - started
        tx.record_event("after-the-holder", "message.received", None, T0)
    holder.wait(timeout=10)
    assert 0.5 < waited < 5, waited
    with pytest.raises(RuntimeError), store.transaction():
        raise RuntimeError("boom")
    started = time.monotonic()
    with store.transaction() as tx:  # not left held by the error
        tx.record_event("after-the-error", "message.received", None, T0)
    assert time.monotonic() - started < 0.5
    store.dispose()


def test_a_command_on_an_up_to_date_database_imports_neither_alembic_nor_rich(tmp_path):
    """What docs/benchmarks.md claims of start-up: Alembic only when a migration is needed,
    rich only for a terminal's progress bar."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'current.db'}"
    Store(url).dispose()  # migrated now
    events = tmp_path / "one.jsonl"
    events.write_text('{"id": "e1", "type": "message.received", "channel": "webchat", '
                      '"timestamp": "2026-11-02T09:00:00Z", "contact": {"external_id": "a"}, '
                      '"message": {"text": "hi"}}\n', "utf-8")
    script = ("import sys; from rules_engine.cli import main\n"
              f"status = main(['--rules', 'rules', '--database-url', {url!r}, 'ingest', "
              f"{str(events)!r}])\n"
              "print(status, 'alembic' in sys.modules, 'rich' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert done.stdout.split()[-3:] == ["0", "False", "False"], done.stdout + done.stderr


def test_a_sqlite_connection_is_kept_between_units_of_work_but_not_a_broken_or_inherited_one(
        tmp_path):
    """Units of work on a SQLite file reuse one open connection; a connection that broke in
    a unit of work is dropped, and a forked process opens its own (a SQLite connection must
    never cross a fork)."""
    import os

    store = Store(f"sqlite:///{tmp_path / 'kept.db'}")

    def driver_used(event_id: str) -> Any:
        with store.transaction() as tx:
            tx.record_event(event_id, "message.received", None, T0)
            return tx.connection.connection.driver_connection

    first = driver_used("e1")
    assert driver_used("e2") is first
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.connection.invalidate()  # as SQLAlchemy does when the driver reports it broken
        raise RuntimeError("the connection broke")
    assert driver_used("e3") is not first
    kept = driver_used("e4")  # held here, and so in the child: its address is not reused
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: say whether it used the parent's connection, then leave
        try:
            os.write(writer, b"parent's" if driver_used("from-the-child") is kept else b"own")
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 100)
    os.waitpid(child, 0)
    assert answer == b"own"
    assert driver_used("e5") is kept  # the parent's own is still its own
    with store.read() as tx:
        assert tx.is_event_processed("from-the-child") and tx.is_event_processed("e5")
    store.dispose()
