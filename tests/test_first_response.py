"""First response time in the report: figures on known rows, the range, slices, the table and
CSV, the HTTP API (against its OpenAPI description), the dashboard, and the demo history."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from rules_engine import metrics
from rules_engine.demo_data import generate_demo_data
from rules_engine.metrics import GroupBy, ReportQuery, conversation_report
from rules_engine.report_format import to_csv, to_table
from rules_engine.store import tables

from .test_metrics import all_rows, assert_within_error, check, expected_figures, key_of
from .test_validation import run_cli
from .test_webhooks import api_headers, app, client  # noqa: F401 - fixtures

T = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY = ReportQuery(T, T + timedelta(days=1))
NOW = T + timedelta(days=3)
ANSWERED = (60, 120, 180, 600, 3600)  # first responses (s) of the five conversations below
KNOWN = {"mean": 912.0, "median": 180.0, "p90": 3600.0, "max": 3600.0}  # p90: rank ceil(4.5)


def row(opened: timedelta, *, first_response: int | None = None, resolution: int | None = None,
        assignee: str = "maria", channel: str = "facebook") -> dict[str, Any]:
    """A conversation opened at T + ``opened``, answered and closed that many seconds later."""
    opened_at = T + opened

    def after(seconds: int | None) -> datetime | None:
        return None if seconds is None else opened_at + timedelta(seconds=seconds)

    return {"channel": channel, "opened_at": opened_at, "open_source": "incoming_message",
            "assignee": assignee, "team": "support", "bot_active": True,
            "first_response_at": after(first_response), "first_response_seconds": first_response,
            "closed_at": after(resolution), "resolution_seconds": resolution,
            "close_source": None if resolution is None else "user"}


def seed(store, rows: list[dict[str, Any]]) -> None:
    """Insert the conversations, each with a contact of its own (directly: the rollups are
    rebuilt from them, as after the demo data)."""
    with store.transaction() as tx:
        for number, conversation in enumerate(rows, start=1):
            contact = tx.connection.execute(tables.contacts.insert().values(
                name=f"contact {number}", created_at=T - timedelta(days=30))).inserted_primary_key[0]
            tx.connection.execute(tables.conversations.insert().values(
                contact_id=contact, **conversation))
        tx.rebuild_rollups()


def five_answered() -> list[dict[str, Any]]:
    """Five conversations answered after ANSWERED seconds, each closed two hours after opening,
    by maria, maria, lee, maria, lee, on facebook, viber, facebook, facebook, viber."""
    people = (("maria", "facebook"), ("maria", "viber"), ("lee", "facebook"),
              ("maria", "facebook"), ("lee", "viber"))
    return [row(timedelta(minutes=10 * n), first_response=seconds, resolution=7200,
                assignee=assignee, channel=channel)
            for n, (seconds, (assignee, channel)) in enumerate(zip(ANSWERED, people, strict=True))]


def report(store, query: ReportQuery = DAY) -> dict[str, Any]:
    return conversation_report(store, query, now=NOW)


def test_figures_on_known_data(store):
    seed(store, five_answered())
    totals = report(store)["totals"]
    assert totals["responded"] == 5
    assert totals["first_response_seconds"] == KNOWN
    assert totals["closed"] == 5 and totals["resolution_seconds"]["median"] == 7200.0


def test_p90_is_the_nearest_rank_like_resolution_time(store):
    minutes = range(1, 11)  # 60 .. 600 s: rank ceil(0.5 * 10) = 5, rank ceil(0.9 * 10) = 9
    seed(store, [row(timedelta(minutes=5 * m), first_response=60 * m, resolution=60 * m)
                 for m in minutes])
    totals = report(store)["totals"]
    assert totals["first_response_seconds"] == {"mean": 330.0, "median": 300.0, "p90": 540.0,
                                                "max": 600.0}
    assert totals["first_response_seconds"] == totals["resolution_seconds"]  # one computation


def test_a_conversation_never_answered_counts_in_resolution_only(store):
    seed(store, [*five_answered(), row(timedelta(hours=1), resolution=1800)])
    result = report(store)
    totals = result["totals"]
    assert totals["closed"] == 6 and totals["responded"] == 5
    assert totals["first_response_seconds"] == KNOWN
    assert totals["resolution_seconds"]["median"] == 7200.0
    assert totals["resolution_seconds"]["mean"] == round((5 * 7200 + 1800) / 6, 3)
    assert sum(b["count"] for b in result["distribution"]) == 6
    counts = {b["bucket"]: b["count"] for b in result["first_response_distribution"]}
    assert counts == {**dict.fromkeys(counts, 0), "1-5 min": 3, "5-15 min": 1, "1-2 h": 1}


def test_the_range_is_on_first_response_at(store):
    seed(store, [
        *five_answered(),
        # answered before the range, closed in it: closed, not responded
        row(-timedelta(days=2), first_response=300, resolution=2 * 86400 + 3600),
        # answered at since exactly, still open: responded, not closed
        row(-timedelta(hours=1), first_response=3600),
        # answered at until exactly, still open: in neither (the range is half-open)
        row(timedelta(hours=23), first_response=3600),
        # answered after the range
        row(timedelta(hours=23, minutes=30), first_response=3600),
    ])
    totals = report(store)["totals"]
    assert totals["closed"] == 6 and totals["responded"] == 6
    assert totals["first_response_seconds"]["max"] == 3600.0
    assert totals["first_response_seconds"]["mean"] == round((sum(ANSWERED) + 3600) / 6, 3)
    later = report(store, ReportQuery(T + timedelta(minutes=30), T + timedelta(days=1)))["totals"]
    assert later["responded"] == 2  # answered at 09:40 (after 600 s) and 10:40 (3600 s)
    assert later["first_response_seconds"] == {"mean": 2100.0, "median": 600.0, "p90": 3600.0,
                                                "max": 3600.0}


def test_sliced_by_assignee_and_channel_and_filtered(store):
    seed(store, [*five_answered(), row(timedelta(hours=2), first_response=45, assignee="tom")])
    by_user = {g["key"]: g for g in report(store, ReportQuery(T, DAY.until, GroupBy.USER))["groups"]}
    assert {key: (g["responded"], g["closed"]) for key, g in by_user.items()} == {
        "lee": (2, 2), "maria": (3, 3), "tom": (1, 0)}  # tom answered, has closed nothing
    assert by_user["maria"]["first_response_seconds"] == {"mean": 260.0, "median": 120.0,
                                                          "p90": 600.0, "max": 600.0}
    assert by_user["lee"]["first_response_seconds"] == {"mean": 1890.0, "median": 180.0,
                                                        "p90": 3600.0, "max": 3600.0}
    assert by_user["tom"]["resolution_seconds"]["median"] is None and by_user["tom"]["open_now"] == 1
    by_channel = report(store, ReportQuery(T, DAY.until, GroupBy.CHANNEL))["groups"]
    assert [(g["key"], g["responded"], g["first_response_seconds"]["max"]) for g in by_channel] == [
        ("facebook", 4, 600.0), ("viber", 2, 3600.0)]
    viber = report(store, ReportQuery(T, DAY.until, filters={"channel": "viber"}))["totals"]
    assert viber["responded"] == 2 and viber["first_response_seconds"]["median"] == 120.0


def test_day_slices_use_the_day_of_the_first_response(store):
    seed(store, [row(timedelta(hours=1), first_response=300, resolution=2 * 86400)])
    groups = report(store, ReportQuery(T, T + timedelta(days=7), GroupBy.DAY))["groups"]
    assert [(g["key"], g["responded"], g["closed"]) for g in groups] == [
        ("2026-11-02", 1, 0), ("2026-11-04", 0, 1)]


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "rollups"])
@pytest.mark.parametrize("by", list(GroupBy))
def test_every_slice_matches_an_independent_calculation(store, by, exact):
    generate_demo_data(store, conversations=1500, days=60, seed=11, now=NOW)
    since, until = NOW - timedelta(days=40), NOW - timedelta(days=5)
    result = (metrics.exact_report if exact else conversation_report)(
        store, ReportQuery(since, until, by), now=NOW)
    answered = [r for r in all_rows(store)
                if r["first_response_at"] and since <= r["first_response_at"] < until]
    groups: dict[Any, list[int]] = {}
    for r in answered:  # day and week: those of the first response (key_of reads closed_at)
        key = "all" if by is GroupBy.NONE else key_of({**r, "closed_at": r["first_response_at"]}
                                                      if by in (GroupBy.DAY, GroupBy.WEEK) else r, by)
        groups.setdefault(key, []).append(r["first_response_seconds"])
    rows = result["groups"] if by is not GroupBy.NONE else [{"key": "all", **result["totals"]}]
    assert {g["key"]: g["responded"] for g in rows if g["responded"]} == {
        key: len(seconds) for key, seconds in groups.items()}
    for g in rows:
        if g["responded"]:
            check(g["first_response_seconds"], expected_figures(groups[g["key"]]), exact)
    assert result["totals"]["responded"] == len(answered) > 100
    assert sum(b["count"] for b in result["first_response_distribution"]) == len(answered)


def test_table_csv_and_the_cli_show_the_first_response_columns(store, database_url):
    seed(store, five_answered())
    result = report(store, ReportQuery(T, DAY.until, GroupBy.USER))
    parsed = list(csv.DictReader(io.StringIO(to_csv(result))))
    assert list(parsed[0])[:8] == ["user", "closed", "mean_seconds", "median_seconds",
                                   "p90_seconds", "max_seconds", "open_now", "open_max_age_seconds"]
    total = parsed[-1]
    assert total["user"] == "TOTAL" and total["responded"] == "5"
    assert [float(total[f"first_response_{name}_seconds"]) for name in KNOWN] == list(KNOWN.values())
    lines = to_table(result).splitlines()
    section = lines.index("First response time of those first answered:")
    assert lines[section + 1].split() == ["user", "responded", "mean", "median", "p90", "max"]
    assert lines[-1].split()[:6] == ["TOTAL", "5", "15m", "12s", "3m", "00s"]  # 912 s, then 180 s
    status, text = run_cli("--database-url", database_url, "report", "--format", "json",
                           "--since", "2026-11-02", "--until", "2026-11-02")
    assert status == 0  # a whole day: from the rollups
    assert_within_error(json.loads(text)["totals"]["first_response_seconds"], KNOWN)


def test_the_report_api_and_the_dashboard(app, client):  # noqa: F811 - fixtures
    seed(app.extensions["rules_engine"].store, five_answered())
    url = "/api/reports/conversations?since=2026-11-02&until=2026-11-02"  # a whole day: rollups
    result = client.get(url + "&by=channel", headers=api_headers()).json
    assert result["totals"]["responded"] == 5
    assert_within_error(result["totals"]["first_response_seconds"], KNOWN)
    assert [g["first_response_seconds"]["median"] for g in result["groups"]] == pytest.approx(
        [180.0, 120.0], rel=metrics.RELATIVE_ERROR)
    document = client.get("/openapi.json").json
    Draft202012Validator({"$ref": "#/components/schemas/Report",
                          "components": document["components"]}).validate(result)
    assert set(document["components"]["schemas"]["Figures"]["properties"]) >= {
        "responded", "first_response_seconds"}
    text = client.get(url + "&format=csv", headers=api_headers()).data.decode()
    assert float(list(csv.DictReader(io.StringIO(text)))[-1]["first_response_median_seconds"]) \
        == pytest.approx(180.0, rel=metrics.RELATIVE_ERROR)
    page = client.get("/dashboard?since=2026-11-02&until=2026-11-02", headers=api_headers())
    html = page.data.decode()
    median = re.search(r'data-testid="median-first-response" data-value="([^"]*)"', html)
    assert median and float(median.group(1)) == pytest.approx(180.0, rel=metrics.RELATIVE_ERROR)
    assert "Medians, 90th percentiles and maxima are within 1% of the exact values" in html
    chart = html.split('data-testid="chart-first-response"')[1].split("</svg>")[0]
    assert re.findall(r'data-value="(\d+)"', chart) == ["0", "3", "1", "0", "0", "1", "0", "0",
                                                        "0", "0"]


def test_first_response_reads_its_covering_index(store):
    if store.dialect != "sqlite":
        pytest.skip("the plan is checked on SQLite")
    histogram = metrics._histogram(ReportQuery(T, DAY.until, GroupBy.TEAM, {"channel": "viber"}),
                                   metrics._Dialect("sqlite"), metrics.FIRST_RESPONSE)
    statement = select(histogram).compile(dialect=sqlite.dialect(),
                                          compile_kwargs={"literal_binds": True})
    with store.read() as tx:
        plan = " ".join(str(line[-1]) for line in
                        tx.connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}"))
    assert "COVERING INDEX ix_conversations_first_response" in plan


def test_demo_data_answers_most_conversations_within_minutes(store):
    generate_demo_data(store, conversations=2000, days=60, seed=3, now=NOW)
    with store.read() as tx:
        rows = [dict(r) for r in tx.connection.execute(select(tables.conversations)).mappings()]
    answered = sorted(r["first_response_seconds"] for r in rows if r["first_response_at"])
    assert 0.7 < len(answered) / len(rows) < 0.95  # some never answered
    assert answered[len(answered) // 2] < 10 * 60  # most within minutes
    assert sum(seconds >= 3600 for seconds in answered) > 5  # some after hours
    for r in rows:
        if r["first_response_at"]:
            assert r["first_response_at"] - r["opened_at"] == timedelta(
                seconds=r["first_response_seconds"])
            assert r["first_response_at"] < (r["closed_at"] or NOW)
