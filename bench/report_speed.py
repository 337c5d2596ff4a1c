"""Benchmark: the conversation report over 1,000,000 conversations on the embedded SQLite store.

Fills a fresh SQLite file with the seeded demo history (``--conversations``, default
1,000,000 over a year; the report rollups are rebuilt from it, timed apart), then times the
report for every slice over the whole year and over the last 30 days: from the rollups
(``conversation_report``, what the API, the CLI and the dashboard serve) side by side with
the exact computation over the conversations rows (``exact_report``, the reference and what
every report did before). The ranges end at the generation time, so each one reads its
whole days from the rollups and the partial last day from the rows. Then the dashboard's
first view: its figures (``dashboard_reports``) and the whole page over HTTP (the Flask
app, in process), over the last 30 days and over the whole year.

    python bench/report_speed.py [--conversations 1000000]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from connectors import create_app
from rules_engine import Store
from rules_engine.demo_data import generate_demo_data
from rules_engine.metrics import (
    RELATIVE_ERROR,
    GroupBy,
    ReportQuery,
    conversation_report,
    dashboard_reports,
    exact_report,
)

TOKEN = "bench-report-token-0123456789abcdef"
ROUNDS = 3  # the median of three timings counts (the exact computation: one, it takes seconds)


def timed(function: Callable[..., Any], *args: Any, rounds: int = ROUNDS,
          **kwargs: Any) -> tuple[float, Any]:
    """The median time of ``rounds`` calls, and the last call's value."""
    times, value = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        value = function(*args, **kwargs)
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def check_within_error(ours: dict[str, Any], exact: dict[str, Any]) -> None:
    """The rollups' totals agree with the exact ones: counts exact, quantiles within error."""
    for measure, count in (("resolution_seconds", "closed"),
                           ("first_response_seconds", "responded")):
        assert ours["totals"][count] == exact["totals"][count]
        for name in ("median", "p90", "max"):
            theirs = exact["totals"][measure][name]
            assert abs(ours["totals"][measure][name] - theirs) <= RELATIVE_ERROR * theirs + 0.001


def slices(store: Store, now: datetime) -> None:
    print(f"{'slice':<14}{'whole year: rollups':>21}{'exact':>9}{'last 30 days: rollups':>24}"
          f"{'exact':>9}")
    for by in GroupBy:
        figures = []
        for days in (365, 30):
            query = ReportQuery(now - timedelta(days=days), now, by)
            ours, report = timed(conversation_report, store, query, now=now)
            exact, reference = timed(exact_report, store, query, now=now, rounds=1)
            check_within_error(report, reference)
            figures += [ours, exact]
        print(f"{by.value:<14}{figures[0]:>19.3f} s{figures[1]:>7.2f} s{figures[2]:>22.3f} s"
              f"{figures[3]:>7.2f} s")


def dashboard(store: Store, url: str, now: datetime) -> None:
    app = create_app({"database_url": url, "rules_dir": str(Path(__file__).parent.parent / "rules"),
                      "api_token": TOKEN})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for days in (30, 365):
        since = (now - timedelta(days=days - 1)).strftime("%Y-%m-%d")
        until = now.strftime("%Y-%m-%d")
        query = ReportQuery(datetime.fromisoformat(since + "T00:00:00+00:00"),
                            datetime.fromisoformat(until + "T00:00:00+00:00") + timedelta(days=1))
        figures, _ = timed(dashboard_reports, store, query, now=now)
        page, response = timed(client.get, f"/dashboard?since={since}&until={until}",
                               headers=headers)
        assert response.status_code == 200
        print(f"dashboard, last {days} days: figures {figures:.3f} s, the whole page over "
              f"HTTP {page:.3f} s")
    app.extensions["rules_engine"].store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        url = f"sqlite:///{Path(temp) / 'report.db'}"
        store = Store(url)
        fill, summary = timed(generate_demo_data, store, conversations=args.conversations,
                              days=365, rounds=1)
        rebuild, rebuilt = timed(store.run, lambda tx: tx.rebuild_rollups(), rounds=1)
        print(f"{summary.conversations:,} conversations ({summary.open_now} open) generated "
              f"with their rollups in {fill:.1f} s; `rebuild-rollups` took {rebuild:.1f} s "
              f"({rebuilt['rows']:,} rows)\n")
        slices(store, summary.until)
        print()
        dashboard(store, url, summary.until)
        store.dispose()


if __name__ == "__main__":
    main()
