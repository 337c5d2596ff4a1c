"""Conversation metrics computed by the database: closed count, resolution time, first
response time, open now.

Resolution time is ``closed_at - opened_at`` in seconds, counted for the conversations closed
in the range; first response time is ``first_response_at - opened_at`` (the first agent
reply), counted for the conversations first answered in the range. Both are one ``Measure``
summarised by the same queries. Percentiles use the nearest-rank definition (the value at
rank ``ceil(p * n)`` of the sorted times; the median is p = 0.5), computed with window
functions so that no row leaves the database.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    union_all,
)

from rules_engine.domain.errors import EventError
from rules_engine.formats.events import EARLIEST, LATEST
from rules_engine.store import Store
from rules_engine.store.tables import conversations as c

Buckets = tuple[tuple[str, float], ...]


class GroupBy(StrEnum):
    """How a report is sliced."""

    NONE = "none"
    USER = "user"
    TEAM = "team"
    CHANNEL = "channel"
    OPEN_SOURCE = "open_source"
    CLOSE_SOURCE = "close_source"
    DAY = "day"
    WEEK = "week"


# Resolution-time histogram buckets: (label, upper bound in seconds, exclusive).
BUCKETS: Buckets = (
    ("< 5 min", 300), ("5-15 min", 900), ("15-30 min", 1800), ("30-60 min", 3600),
    ("1-2 h", 7200), ("2-4 h", 14400), ("4-8 h", 28800), ("8-24 h", 86400),
    ("1-3 days", 259200), ("> 3 days", float("inf")),
)

# First-response buckets: most first replies come within minutes, so finer at the start.
FIRST_RESPONSE_BUCKETS: Buckets = (
    ("< 1 min", 60), ("1-5 min", 300), ("5-15 min", 900), ("15-30 min", 1800),
    ("30-60 min", 3600), ("1-2 h", 7200), ("2-4 h", 14400), ("4-8 h", 28800),
    ("8-24 h", 86400), ("> 1 day", float("inf")),
)


@dataclass(frozen=True)
class Measure:
    """A duration the report summarises: the conversations whose ``at`` falls in the range,
    their ``seconds``; ``day`` and ``week`` slices are the UTC day / week of ``at``. Both
    columns lead a covering index, so every query on a measure reads that index only."""

    at: Any
    seconds: Any
    buckets: Buckets


RESOLUTION = Measure(c.c.closed_at, c.c.resolution_seconds, BUCKETS)
FIRST_RESPONSE = Measure(c.c.first_response_at, c.c.first_response_seconds,
                         FIRST_RESPONSE_BUCKETS)


@dataclass(frozen=True)
class ReportQuery:
    """A time range (closed conversations whose ``closed_at`` falls in it, first-answered ones
    whose ``first_response_at`` does), filters, a slice."""

    since: datetime
    until: datetime
    by: GroupBy = GroupBy.NONE
    filters: dict[str, str] = field(default_factory=dict)

    FILTERABLE = ("user", "team", "channel", "open_source", "close_source")

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise EventError("since and until need a time zone")
        if self.until <= self.since:
            raise EventError("until must be after since", path="until")
        unknown = set(self.filters) - set(self.FILTERABLE)
        if unknown:
            raise EventError(f"unknown filter(s): {', '.join(sorted(unknown))}",
                             hint=f"filters: {', '.join(self.FILTERABLE)}")


def default_range(now: datetime, days: int = 30) -> tuple[datetime, datetime]:
    """The last ``days`` whole days up to the end of today (UTC)."""
    end = (now.astimezone(timezone.utc) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=days), end


class _Dialect:
    """The few SQL expressions that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        self.name = name

    def seconds_between(self, start: Any, end: Any) -> ColumnElement[Any]:
        """Seconds from ``start`` to ``end``: a float on SQLite, a numeric on PostgreSQL."""
        if self.name == "postgresql":
            return func.extract("epoch", end - start)
        return (func.julianday(end) - func.julianday(start)) * 86400.0

    def day(self, column: Any) -> ColumnElement[str]:
        """The UTC day as YYYY-MM-DD (SQLite stores UTC timestamps as ISO text)."""
        if self.name == "postgresql":
            return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
        return func.substr(column, 1, 10)

    def week(self, column: Any) -> ColumnElement[str]:
        """The Monday that starts the ISO week, as YYYY-MM-DD."""
        if self.name == "postgresql":
            return func.to_char(func.date_trunc("week", func.timezone("UTC", column)), "YYYY-MM-DD")
        return func.date(func.substr(column, 1, 10), "weekday 0", "-6 days")


def _group_column(by: GroupBy, dialect: _Dialect, at: Any) -> ColumnElement[Any]:
    """The slice's key; ``day`` and ``week`` are those of the timestamp ``at``."""
    columns: dict[GroupBy, ColumnElement[Any]] = {
        GroupBy.NONE: literal("all"),
        GroupBy.USER: c.c.assignee,
        GroupBy.TEAM: c.c.team,
        GroupBy.CHANNEL: c.c.channel,
        GroupBy.OPEN_SOURCE: c.c.open_source,
        GroupBy.CLOSE_SOURCE: c.c.close_source,
        GroupBy.DAY: dialect.day(at),
        GroupBy.WEEK: dialect.week(at),
    }
    return columns[by]


_FILTER_COLUMNS = {"user": c.c.assignee, "team": c.c.team, "channel": c.c.channel,
                   "open_source": c.c.open_source, "close_source": c.c.close_source}


def _filters(query: ReportQuery) -> list[ColumnElement[bool]]:
    return [_FILTER_COLUMNS[name] == value for name, value in query.filters.items()]


def _in_range(query: ReportQuery, measure: Measure) -> list[ColumnElement[bool]]:
    """The measure's conversations in the range that pass the filters (a NULL time is never
    in range; a time without its seconds is left out rather than counted as nothing)."""
    return [measure.at >= query.since, measure.at < query.until, measure.seconds.is_not(None),
            *_filters(query)]


def _histogram(query: ReportQuery, dialect: _Dialect, measure: Measure) -> Any:
    """The measure's conversations in range as (key, seconds, count): the one pass over the
    rows."""
    return (
        select(_group_column(query.by, dialect, measure.at).label("key"),
               measure.seconds.label("s"), func.count().label("c"))
        .where(*_in_range(query, measure))
        .group_by(literal_column("key"), measure.seconds)
        .cte("histogram")
    )


def _duration_rows(store: Store, query: ReportQuery, dialect: _Dialect,
                   measure: Measure) -> list[dict[str, Any]]:
    """Per group (level 0) and in total (level 1): count, mean, median, p90, max."""
    histogram = _histogram(query, dialect, measure)
    levels = union_all(
        select(literal(0).label("level"), histogram.c.key, histogram.c.s, histogram.c.c),
        select(literal(1), literal(None).label("key"), histogram.c.s,
               func.sum(histogram.c.c)).group_by(histogram.c.s),
    ).subquery("levels")
    partition = (levels.c.level, levels.c.key)
    ranked = select(
        levels.c.level, levels.c.key, levels.c.s, levels.c.c,
        func.sum(levels.c.c).over(partition_by=partition, order_by=levels.c.s).label("cum"),
        func.sum(levels.c.c).over(partition_by=partition).label("n"),
    ).subquery("ranked")

    def percentile(p: float) -> ColumnElement[Any]:
        return func.min(case((ranked.c.cum >= p * ranked.c.n, ranked.c.s)))

    statement = (
        select(
            ranked.c.level, ranked.c.key, func.sum(ranked.c.c).label("count"),
            (func.sum(ranked.c.s * ranked.c.c) * 1.0 / func.sum(ranked.c.c)).label("mean"),
            percentile(0.5).label("median"), percentile(0.9).label("p90"),
            func.max(ranked.c.s).label("max"),
        )
        .group_by(ranked.c.level, ranked.c.key)
        .order_by(ranked.c.level, ranked.c.key)
    )
    with store.read() as tx:
        return [dict(row) for row in tx.connection.execute(statement).mappings()]


# Open conversations have no close source or close day: these slices show no open figures.
_CLOSED_ONLY = (GroupBy.CLOSE_SOURCE, GroupBy.DAY, GroupBy.WEEK)


def _open_rows(store: Store, query: ReportQuery, dialect: _Dialect,
               now: datetime) -> dict[Any, dict[str, Any]]:
    """Open conversations now: count and age, per group (or in total, key ``all``)."""
    by = GroupBy.NONE if query.by in _CLOSED_ONLY else query.by
    group = _group_column(by, dialect, RESOLUTION.at)
    age = cast(dialect.seconds_between(c.c.opened_at, literal(now, type_=c.c.opened_at.type)), Float)
    statement = (
        select(group.label("key"), func.count().label("open"), func.avg(age).label("mean_age"),
               func.max(age).label("max_age"))
        .where(c.c.closed_at.is_(None), *_filters(query))
        .group_by(literal_column("key"))
    )
    with store.read() as tx:
        return {row["key"]: dict(row) for row in tx.connection.execute(statement).mappings()}


def _distribution(store: Store, query: ReportQuery, measure: Measure) -> list[dict[str, Any]]:
    """How many of the measure's conversations in range fall in each of its buckets."""
    buckets = measure.buckets
    bucket = case(*[(measure.seconds < bound, index)
                    for index, (_, bound) in enumerate(buckets[:-1])],
                  else_=len(buckets) - 1)
    statement = (
        select(bucket.label("bucket"), func.count().label("count"))
        .where(*_in_range(query, measure))
        .group_by(literal_column("bucket"))
    )
    with store.read() as tx:
        counts = {row.bucket: row.count for row in tx.connection.execute(statement)}
    return [{"bucket": label, "count": counts.get(index, 0)}
            for index, (label, _) in enumerate(buckets)]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


# The figures of each duration (resolution, first response), in the order reports show them.
STATISTICS = ("mean", "median", "p90", "max")


def _durations(row: dict[str, Any]) -> dict[str, float | None]:
    return {name: _rounded(row.get(name)) for name in STATISTICS}


def _figures(closed: dict[str, Any], responded: dict[str, Any],
             opened: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "closed": int(closed.get("count") or 0),
        "resolution_seconds": _durations(closed),
        "responded": int(responded.get("count") or 0),
        "first_response_seconds": _durations(responded),
        "open_now": None if opened is None else int(opened.get("open", 0)),
        "open_age_seconds": {"mean": _rounded((opened or {}).get("mean_age")),
                             "max": _rounded((opened or {}).get("max_age"))},
    }


def _levels(rows: list[dict[str, Any]]) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """A measure's rows as (per group key, total)."""
    return ({row["key"]: row for row in rows if row["level"] == 0},
            next((row for row in rows if row["level"] == 1), {}))


def conversation_report(store: Store, query: ReportQuery, *, now: datetime) -> dict[str, Any]:
    """The report: totals, one row per group, the resolution- and first-response-time
    distributions.

    Closed figures cover conversations closed within [since, until); first-response figures
    the conversations first answered by an agent within it (whether closed or not); open
    figures are the conversations open at ``now``, with their age.
    """
    dialect = _Dialect(store.dialect)
    grouped, total = _levels(_duration_rows(store, query, dialect, RESOLUTION))
    answered, total_answered = _levels(_duration_rows(store, query, dialect, FIRST_RESPONSE))
    open_now = _open_rows(store, query, dialect, now)
    groups = []
    if query.by is not GroupBy.NONE:
        keys = sorted(set(grouped) | set(answered)
                      | (set() if query.by in _CLOSED_ONLY else set(open_now)),
                      key=lambda key: (key is None, str(key)))
        groups = [{"key": key, **_figures(grouped.get(key, {}), answered.get(key, {}),
                                          None if query.by in _CLOSED_ONLY else open_now.get(key, {}))}
                  for key in keys]
    total_open = (_open_rows(store, ReportQuery(query.since, query.until, GroupBy.NONE,
                                                query.filters), dialect, now)
                  if query.by not in (GroupBy.NONE, *_CLOSED_ONLY) else open_now)
    return {
        "since": query.since.isoformat(), "until": query.until.isoformat(),
        "by": str(query.by), "filters": dict(query.filters), "generated_at": now.isoformat(),
        "totals": _figures(total, total_answered, total_open.get("all", {})),
        "groups": groups,
        "distribution": _distribution(store, query, RESOLUTION),
        "first_response_distribution": _distribution(store, query, FIRST_RESPONSE),
    }


def closed_per_day(store: Store, query: ReportQuery) -> list[dict[str, Any]]:
    """Closed count for every day of the range (days with none included, as 0)."""
    report_query = ReportQuery(query.since, query.until, GroupBy.DAY, query.filters)
    dialect = _Dialect(store.dialect)
    counts = {row["key"]: int(row["count"])
              for row in _duration_rows(store, report_query, dialect, RESOLUTION)
              if row["level"] == 0}
    days = []
    day = query.since.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < query.until:
        key = day.strftime("%Y-%m-%d")
        days.append({"day": key, "closed": counts.get(key, 0)})
        day += timedelta(days=1)
    return days



def _parse_bound(value: str, name: str, *, end_of_day: bool) -> datetime:
    """``2026-11-01`` (a whole UTC day) or an ISO 8601 timestamp with a time zone, between
    the years 1970 and 2200."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            moment = day + timedelta(days=1) if end_of_day else day
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise EventError(f"'{value}' has no time zone", path=name,
                                 hint="add Z or an offset")
            moment = moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise EventError(f"'{value[:60]}' is not a date or timestamp", path=name,
                         hint="e.g. 2026-11-01 or 2026-11-01T08:00:00Z") from None
    if not EARLIEST <= moment <= LATEST:
        raise EventError(f"'{value[:60]}' is outside the years 1970 to 2200", path=name,
                         hint="e.g. 2026-11-01")
    return moment


def parse_report_query(params: Mapping[str, str | None], *, now: datetime,
                       max_days: int | None = None) -> ReportQuery:
    """A ReportQuery from text parameters (CLI flags, query string).

    ``since`` / ``until`` take a date (``until`` then includes that whole day) or a timestamp;
    by default the last 30 days; ``since`` must come before ``until``, and the range may
    span at most ``max_days`` when given. ``by`` is a GroupBy; ``user``, ``team``,
    ``channel``, ``open_source`` and ``close_source`` filter.
    """
    default_since, default_until = default_range(now)
    since_text, until_text = params.get("since"), params.get("until")
    since = _parse_bound(since_text, "since", end_of_day=False) if since_text else default_since
    until = _parse_bound(until_text, "until", end_of_day=True) if until_text else default_until
    if since >= until:
        raise EventError("since must come before until", path="since",
                         hint="e.g. since=2026-11-01&until=2026-11-30")
    if max_days is not None and until - since > timedelta(days=max_days):
        raise EventError(f"a range of more than {max_days} days", path="until",
                         hint=f"choose at most {max_days} days")
    by_text = params.get("by") or "none"
    try:
        by = GroupBy(by_text)
    except ValueError:
        raise EventError(f"unknown slice '{by_text}'", path="by",
                         hint=f"one of: {', '.join(g.value for g in GroupBy)}") from None
    filters = {name: value for name in ReportQuery.FILTERABLE if (value := params.get(name))}
    return ReportQuery(since, until, by, filters)
