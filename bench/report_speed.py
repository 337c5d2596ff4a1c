"""Benchmark: the conversation report over 1,000,000 conversations on the embedded SQLite store.

Fills a fresh SQLite file with the seeded demo history (``--conversations``, default
1,000,000 over a year), then times the report for every slice over the whole year and over
the last 30 days, side by side with the obvious alternative: fetching the closed rows and
computing the same figures in Python.

    python bench/report_speed.py [--conversations 1000000]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from rules_engine import Store
from rules_engine.demo_data import generate_demo_data
from rules_engine.metrics import GroupBy, ReportQuery, conversation_report
from rules_engine.store.tables import conversations


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - started, value


def python_report(store: Store, query: ReportQuery) -> dict:
    """The same totals computed in Python over fetched rows (the baseline)."""
    statement = select(conversations.c.opened_at, conversations.c.closed_at).where(
        conversations.c.closed_at >= query.since, conversations.c.closed_at < query.until)
    with store.read() as tx:
        seconds = sorted(int((closed - opened).total_seconds())
                         for opened, closed in tx.connection.execute(statement))
    count = len(seconds)
    return {"closed": count, "mean": sum(seconds) / count,
            "median": seconds[math.ceil(0.5 * count) - 1], "p90": seconds[math.ceil(0.9 * count) - 1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        store = Store(f"sqlite:///{Path(temp) / 'report.db'}")
        fill, summary = timed(generate_demo_data, store, conversations=args.conversations, days=365)
        print(f"{summary.conversations:,} conversations ({summary.open_now} open) generated "
              f"in {fill:.1f} s\n")
        now = summary.until
        print(f"{'slice':<14}{'whole year':>12}{'last 30 days':>14}")
        for by in GroupBy:
            year, report = timed(conversation_report, store,
                                 ReportQuery(now - timedelta(days=365), now, by), now=now)
            month, _ = timed(conversation_report, store,
                             ReportQuery(now - timedelta(days=30), now, by), now=now)
            print(f"{by.value:<14}{year:>10.2f} s{month:>12.2f} s")
        query = ReportQuery(now - timedelta(days=365), now)
        ours, report = timed(conversation_report, store, query, now=now)
        theirs, baseline = timed(python_report, store, query)
        assert baseline["closed"] == report["totals"]["closed"]
        assert baseline["median"] == report["totals"]["resolution_seconds"]["median"]
        print(f"\nyear totals in the database {ours:.2f} s vs rows fetched and computed in "
              f"Python {theirs:.2f} s: {theirs / ours:.1f}x faster")
        store.dispose()


if __name__ == "__main__":
    main()
