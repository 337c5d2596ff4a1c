"""Reports against an independent, slow, obvious Python calculation over the same rows."""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from rules_engine import EventError
from rules_engine.demo_data import generate_demo_data
from rules_engine.metrics import (
    BUCKETS,
    RELATIVE_ERROR,
    GroupBy,
    ReportQuery,
    closed_per_day,
    conversation_report,
    exact_report,
    parse_report_query,
)
from rules_engine.store import tables

from .conftest import event, message
from .test_validation import run_cli

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def seeded(store):
    generate_demo_data(store, conversations=3000, days=90, seed=11, now=NOW)
    return store


def all_rows(store) -> list[dict]:
    with store.read() as tx:
        return [dict(r) for r in tx.connection.execute(select(tables.conversations)).mappings()]


def nearest_rank(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered)) - 1]


def key_of(row: dict, by: GroupBy):
    return {
        GroupBy.USER: row["assignee"], GroupBy.TEAM: row["team"], GroupBy.CHANNEL: row["channel"],
        GroupBy.OPEN_SOURCE: row["open_source"], GroupBy.CLOSE_SOURCE: row["close_source"],
        GroupBy.DAY: row["closed_at"] and row["closed_at"].strftime("%Y-%m-%d"),
        GroupBy.WEEK: row["closed_at"] and (row["closed_at"] - timedelta(
            days=row["closed_at"].weekday())).strftime("%Y-%m-%d"),
    }[by]


def expected_figures(durations: list[int]) -> dict:
    return {"mean": round(sum(durations) / len(durations), 3),
            "median": float(nearest_rank(durations, 0.5)),
            "p90": float(nearest_rank(durations, 0.9)), "max": float(max(durations))}


def assert_within_error(figures: dict, expected: dict) -> None:
    """A report's duration figures from the rollups: the mean exact (to its rounding), the
    median, p90 and max within the sketch's relative error of the exact ones."""
    assert figures["mean"] == expected["mean"]
    for name in ("median", "p90", "max"):
        if expected[name] is None:
            assert figures[name] is None
        else:
            assert abs(figures[name] - expected[name]) <= RELATIVE_ERROR * expected[name] + 0.001, \
                (name, figures[name], expected[name])


def check(figures: dict, expected: dict, exact: bool) -> None:
    """Equal, or (``exact`` False) within the stated error."""
    if exact:
        assert figures == expected
    else:
        assert_within_error(figures, expected)


def seconds(row: dict) -> int:
    return int((row["closed_at"] - row["opened_at"]).total_seconds())


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "rollups"])
@pytest.mark.parametrize("by", [g for g in GroupBy if g is not GroupBy.NONE])
def test_report_matches_an_independent_calculation(seeded, by, exact):
    """The exact report to the second; the report from the rollups (this range has whole
    days and cuts two) exact in counts and means, within the stated error elsewhere."""
    since, until = NOW - timedelta(days=60), NOW - timedelta(days=5)
    report = (exact_report if exact else conversation_report)(
        seeded, ReportQuery(since, until, by), now=NOW)
    rows = all_rows(seeded)
    closed = [r for r in rows if r["closed_at"] and since <= r["closed_at"] < until]
    groups: dict = defaultdict(list)
    for row in closed:
        groups[key_of(row, by)].append(seconds(row))
    by_key = {g["key"]: g for g in report["groups"]}
    assert {k for k, g in by_key.items() if g["closed"]} == set(groups)
    for key, durations in groups.items():
        assert by_key[key]["closed"] == len(durations)
        check(by_key[key]["resolution_seconds"], expected_figures(durations), exact)
    everything = [seconds(r) for r in closed]
    assert report["totals"]["closed"] == len(everything)
    check(report["totals"]["resolution_seconds"], expected_figures(everything), exact)
    open_rows = [r for r in rows if r["closed_at"] is None]
    assert report["totals"]["open_now"] == len(open_rows) > 0
    oldest = max((NOW - r["opened_at"]).total_seconds() for r in open_rows)
    assert report["totals"]["open_age_seconds"]["max"] == pytest.approx(oldest, abs=0.01)
    if by in (GroupBy.USER, GroupBy.TEAM, GroupBy.CHANNEL, GroupBy.OPEN_SOURCE):
        open_counts: dict = defaultdict(int)
        for row in open_rows:
            open_counts[key_of(row, by)] += 1
        assert {k: g["open_now"] for k, g in by_key.items() if g["open_now"]} == open_counts


def test_distribution_and_closed_per_day(seeded):
    since, until = datetime(2026, 10, 26, tzinfo=timezone.utc), datetime(2026, 11, 25, tzinfo=timezone.utc)
    query = ReportQuery(since, until, filters={"channel": "facebook"})
    report = conversation_report(seeded, query, now=NOW)
    closed = [r for r in all_rows(seeded)
              if r["closed_at"] and since <= r["closed_at"] < until and r["channel"] == "facebook"]
    expected = [0] * len(BUCKETS)
    for row in closed:
        expected[next(i for i, (_, bound) in enumerate(BUCKETS) if seconds(row) < bound)] += 1
    assert [b["count"] for b in report["distribution"]] == expected
    per_day = closed_per_day(seeded, query)
    assert len(per_day) == 30 and sum(d["closed"] for d in per_day) == len(closed)
    first_day = per_day[0]["day"]
    assert first_day == since.strftime("%Y-%m-%d")
    assert per_day[0]["closed"] == sum(1 for r in closed
                                       if r["closed_at"].strftime("%Y-%m-%d") == first_day)


def test_report_reflects_the_engines_closes(make_engine, store):
    engine = make_engine()
    base = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
    contact = engine.process(message("psid-1", "hi")).contact_id  # opened at base
    engine.process(event("conversation.close", contact={"id": contact}, actor="maria", minutes=45))
    engine.process(message("psid-2", "hi", minutes=10))
    report = conversation_report(store, ReportQuery(base, base + timedelta(days=1),
                                                    GroupBy.CLOSE_SOURCE), now=base + timedelta(hours=2))
    assert report["totals"]["closed"] == 1
    assert report["groups"] == [{"key": "user", "closed": 1,
                                 "resolution_seconds": {"mean": 2700.0, "median": 2700.0,
                                                        "p90": 2700.0, "max": 2700.0},
                                 "responded": 0,
                                 "first_response_seconds": {"mean": None, "median": None,
                                                            "p90": None, "max": None},
                                 "open_now": None,
                                 "open_age_seconds": {"mean": None, "max": None}}]
    assert report["totals"]["open_now"] == 1
    assert report["totals"]["open_age_seconds"]["max"] == 110 * 60


def test_report_query_parsing():
    query = parse_report_query({"since": "2026-11-01", "until": "2026-11-07", "by": "team",
                                "channel": "viber"}, now=NOW)
    assert query.since == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert query.until == datetime(2026, 11, 8, tzinfo=timezone.utc)  # the 7th is included
    assert query.by is GroupBy.TEAM and query.filters == {"channel": "viber"}
    default = parse_report_query({}, now=NOW)
    assert default.until - default.since == timedelta(days=30)
    for bad in ({"since": "yesterday"}, {"by": "colour"}, {"since": "2026-11-05", "until": "2026-11-01"},
                {"since": "2026-11-01T00:00:00"}):
        with pytest.raises(EventError):
            parse_report_query(bad, now=NOW)


def test_report_command_table_and_csv(seeded, database_url):
    url = database_url
    status, table = run_cli("--database-url", url, "report", "--by", "team",
                            "--since", "2026-09-01", "--until", "2026-11-25")
    assert status == 0
    lines = table.splitlines()
    assert lines[1] == "Resolution time of those closed, and those open now:"
    assert lines[2].split() == ["team", "closed", "mean", "median", "p90", "max", "open", "now",
                                "oldest", "open"]
    assert [line.split()[0] for line in lines[4:8]] == ["billing", "onboarding", "support", "TOTAL"]
    assert len({len(line) for line in lines[2:4]}) == 1  # header and rule have the same width
    status, text = run_cli("--database-url", url, "report", "--by", "team", "--format", "csv",
                           "--since", "2026-09-01", "--until", "2026-11-25")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [row["team"] for row in parsed] == ["billing", "onboarding", "support", "TOTAL"]
    assert sum(int(r["closed"]) for r in parsed[:-1]) == int(parsed[-1]["closed"])
