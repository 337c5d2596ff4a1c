"""The store itself: migrations match the tables, an old schema is refused, repeats apply once."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from rules_engine import Store
from rules_engine.store import StoreNotReady
from rules_engine.store.tables import metadata

from .conftest import POSTGRES_URL, message
from .test_validation import run_cli


def test_the_migrations_build_exactly_the_declared_tables(store):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


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
