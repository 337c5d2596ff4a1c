"""Conversation metrics computed by the database: closed count, resolution time, first
response time, open now.

Resolution time is ``closed_at - opened_at`` in seconds, counted for the conversations closed
in the range; first response time is ``first_response_at - opened_at`` (the first agent
reply), counted for the conversations first answered in the range. Both are one ``Measure``
summarised by the same queries. Percentiles use the nearest-rank definition (the value at
rank ``ceil(p * n)`` of the sorted times; the median is p = 0.5), computed with window
functions so that no row leaves the database.

``conversation_report`` reads the whole UTC days of a range from the report rollups
(rules_engine.store.rollups: kept in the transaction of every change, so a report does not
grow with history) and only the partial first and last days from the conversations: counts,
sums, means and the distributions are exact; medians, p90s and maxima are those of the
rollups' sketch, within ``RELATIVE_ERROR`` (1%) of the exact values. ``exact_report``
computes everything from the conversations rows: the reference.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
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

from rules_engine.domain.durations import (
    BUCKETS,
    FIRST_RESPONSE_BUCKETS,
    RELATIVE_ERROR,
    Buckets,
    Summary,
)
from rules_engine.domain.errors import EventError
from rules_engine.formats.events import EARLIEST, LATEST
from rules_engine.store import Store, StoreTx
from rules_engine.store import rollups as stored
from rules_engine.store.tables import conversations as c

__all__ = ["BUCKETS", "FIRST_RESPONSE_BUCKETS", "RELATIVE_ERROR", "GroupBy", "ReportQuery",
           "closed_per_day", "conversation_report", "dashboard_reports", "default_range",
           "exact_report", "parse_report_query", "rebuild_rollups"]


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


@dataclass(frozen=True)
class Measure:
    """A duration the report summarises: the conversations whose ``at`` falls in the range,
    their ``seconds``; ``day`` and ``week`` slices are the UTC day / week of ``at``. Both
    columns lead a covering index, so every query on a measure reads that index only."""

    at: Any
    seconds: Any
    buckets: Buckets
    rollup: stored.Measure


RESOLUTION = Measure(c.c.closed_at, c.c.resolution_seconds, BUCKETS, stored.RESOLUTION)
FIRST_RESPONSE = Measure(c.c.first_response_at, c.c.first_response_seconds,
                         FIRST_RESPONSE_BUCKETS, stored.FIRST_RESPONSE)


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
        """The UTC day as YYYY-MM-DD (the rollups' own day)."""
        day: ColumnElement[str] = stored.utc_day(column, self.name)
        return day

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
_OPEN_SLICES = (GroupBy.USER, GroupBy.TEAM, GroupBy.CHANNEL, GroupBy.OPEN_SOURCE)


def _open_now(tx: StoreTx, query: ReportQuery, dialect: _Dialect,
              now: datetime) -> list[dict[str, Any]]:
    """Open conversations now, per user, team, channel and open source together: how many,
    and their total and largest age (``_open_by`` sums them up for any slice)."""
    age = cast(dialect.seconds_between(c.c.opened_at, literal(now, type_=c.c.opened_at.type)), Float)
    columns = [_group_column(by, dialect, RESOLUTION.at) for by in _OPEN_SLICES]
    statement = (
        select(*(column.label(by.value) for by, column in zip(_OPEN_SLICES, columns)),
               func.count().label("open"), func.sum(age).label("age"),
               func.max(age).label("max_age"))
        .where(c.c.closed_at.is_(None), *_filters(query))
        .group_by(*columns)
    )
    return [dict(row) for row in tx.connection.execute(statement).mappings()]


def _open_by(rows: list[dict[str, Any]], by: GroupBy) -> dict[Any, dict[str, Any]]:
    """Open figures per group of ``by`` (one group, ``all``, for the slices open
    conversations have no value of)."""
    groups: dict[Any, dict[str, Any]] = {}
    for row in rows:
        key = row[by.value] if by in _OPEN_SLICES else "all"
        group = groups.setdefault(key, {"open": 0, "age": 0.0, "max_age": None})
        group["open"] += row["open"]
        group["age"] += float(row["age"])
        group["max_age"] = max(float(row["max_age"]), group["max_age"] or 0.0)
    for group in groups.values():
        group["mean_age"] = group["age"] / group["open"]
    return groups


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
        counts: dict[int, int] = {bucket: count for bucket, count in tx.connection.execute(statement)}
    return _bucket_rows(measure, [counts.get(index, 0) for index in range(len(buckets))])


def _bucket_rows(measure: Measure, counts: list[int]) -> list[dict[str, Any]]:
    return [{"bucket": label, "count": count}
            for (label, _), count in zip(measure.buckets, counts)]


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


# A measure's figures per group key, and in total.
Levels = tuple[dict[Any, dict[str, Any]], dict[str, Any]]


def _levels(rows: list[dict[str, Any]]) -> Levels:
    """A measure's rows as (per group key, total)."""
    return ({row["key"]: row for row in rows if row["level"] == 0},
            next((row for row in rows if row["level"] == 1), {}))


def _assemble(query: ReportQuery, now: datetime, closed: Levels, answered: Levels,
              open_rows: list[dict[str, Any]], distributions: tuple[list[Any], list[Any]]
              ) -> dict[str, Any]:
    """The report from its parts (both computations share it)."""
    grouped, total = closed
    answered_grouped, total_answered = answered
    open_now = _open_by(open_rows, query.by)
    groups = []
    if query.by is not GroupBy.NONE:
        keys = sorted(set(grouped) | set(answered_grouped)
                      | (set() if query.by in _CLOSED_ONLY else set(open_now)),
                      key=lambda key: (key is None, str(key)))
        groups = [{"key": key, **_figures(grouped.get(key, {}), answered_grouped.get(key, {}),
                                          None if query.by in _CLOSED_ONLY else open_now.get(key, {}))}
                  for key in keys]
    return {
        "since": query.since.isoformat(), "until": query.until.isoformat(),
        "by": str(query.by), "filters": dict(query.filters), "generated_at": now.isoformat(),
        "totals": _figures(total, total_answered, _open_by(open_rows, GroupBy.NONE).get("all", {})),
        "groups": groups,
        "distribution": distributions[0],
        "first_response_distribution": distributions[1],
    }


def exact_report(store: Store, query: ReportQuery, *, now: datetime) -> dict[str, Any]:
    """The report computed from the conversations rows alone: exact, and the reference the
    rollups are tested against (``conversation_report`` says what each figure covers)."""
    dialect = _Dialect(store.dialect)
    with store.read() as tx:
        open_rows = _open_now(tx, query, dialect, now)
    return _assemble(query, now, _levels(_duration_rows(store, query, dialect, RESOLUTION)),
                     _levels(_duration_rows(store, query, dialect, FIRST_RESPONSE)), open_rows,
                     (_distribution(store, query, RESOLUTION),
                      _distribution(store, query, FIRST_RESPONSE)))


# -- from the rollups ----------------------------------------------------------------------

_MEASURES = (RESOLUTION, FIRST_RESPONSE)
Summaries = dict[Measure, dict[Any, Summary]]  # per measure, per group key


def _rollup_dimension(query: ReportQuery, by: GroupBy) -> str | None:
    """The rollup slice that answers ``by`` under the query's filters (day and week: that of
    the whole range, per day); None when no rollup does (two filters, or a filter on another
    slice than ``by``)."""
    if len(query.filters) > 1:
        return None
    if query.filters:
        [name] = query.filters
        return name if by in (GroupBy.NONE, GroupBy.DAY, GroupBy.WEEK) or by.value == name else None
    return "none" if by in (GroupBy.NONE, GroupBy.DAY, GroupBy.WEEK) else by.value


def _whole_days(query: ReportQuery) -> tuple[datetime, datetime] | None:
    """The whole UTC days the range covers, as [first, end); None when it covers none."""
    since, until = query.since.astimezone(timezone.utc), query.until.astimezone(timezone.utc)
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < since:
        first += timedelta(days=1)
    end = until.replace(hour=0, minute=0, second=0, microsecond=0)
    return (first, end) if first < end else None


def _rollup_key(by: GroupBy, row: stored.StoredRollup) -> Any:
    if by is GroupBy.DAY:
        return row.day
    if by is GroupBy.WEEK:
        day = date.fromisoformat(row.day)
        return (day - timedelta(days=day.weekday())).isoformat()
    return "all" if by is GroupBy.NONE else row.key


def _add_partial(tx: StoreTx, query: ReportQuery, dialect: _Dialect, by: GroupBy,
                 summaries: Summaries) -> None:
    """Add the conversations of a range that cuts days, read from their rows."""
    for measure in _MEASURES:
        groups = summaries[measure]
        statement = (
            select(_group_column(by, dialect, measure.at).label("key"), measure.seconds,
                   func.count())
            .where(*_in_range(query, measure))
            .group_by(literal_column("key"), measure.seconds)
        )
        for key, seconds, count in tx.connection.execute(statement):
            if key not in groups:
                groups[key] = Summary(len(measure.buckets))
            groups[key].add(seconds, measure.buckets, count)


def _rollup_summaries(tx: StoreTx, query: ReportQuery, dialect: _Dialect,
                      slices: Iterable[GroupBy]) -> dict[GroupBy, Summaries]:
    """Per slice, per measure, per group: the summary of the range, its whole days from the
    rollups (every slice's rows in one statement), the rest from the conversations."""
    dimensions = {by: _rollup_dimension(query, by) for by in slices}
    result: dict[GroupBy, Summaries] = {by: {m: {} for m in _MEASURES} for by in dimensions}
    days = _whole_days(query)
    if days is not None:
        measures = {measure.rollup.name: measure for measure in _MEASURES}
        key = tuple(query.filters.values())[0] if query.filters else None
        for row in stored.read_rollups(
                tx.connection, list(measures), sorted({d for d in dimensions.values() if d}),
                first_day=days[0].strftime("%Y-%m-%d"), end_day=days[1].strftime("%Y-%m-%d"),
                key=(key,) if query.filters else None):
            measure = measures[row.measure]
            for by, dimension in dimensions.items():
                if dimension == row.dimension:
                    groups = result[by][measure]
                    group = _rollup_key(by, row)
                    if group not in groups:
                        groups[group] = Summary(len(measure.buckets))
                    row.add_to(groups[group])
    parts = [(query.since, query.until)] if days is None else [(query.since, days[0]),
                                                                (days[1], query.until)]
    for since, until in parts:
        if since < until:
            for by in dimensions:
                _add_partial(tx, ReportQuery(since, until, by, query.filters), dialect, by,
                             result[by])
    return result


def _summary_row(summary: Summary) -> dict[str, Any]:
    return {"count": summary.count, "mean": summary.mean, "median": summary.quantile(0.5),
            "p90": summary.quantile(0.9), "max": summary.maximum}


def _from_summaries(query: ReportQuery, now: datetime, summaries: Summaries,
                    open_rows: list[dict[str, Any]]) -> dict[str, Any]:
    levels, distributions = [], []
    for measure in _MEASURES:
        total = Summary(len(measure.buckets))
        for summary in summaries[measure].values():
            total.merge(summary)
        levels.append(({key: _summary_row(summary) for key, summary in summaries[measure].items()},
                       _summary_row(total) if total.count else {}))
        distributions.append(_bucket_rows(measure, total.buckets))
    return _assemble(query, now, levels[0], levels[1], open_rows,
                     (distributions[0], distributions[1]))


def conversation_report(store: Store, query: ReportQuery, *, now: datetime) -> dict[str, Any]:
    """The report: totals, one row per group, the resolution- and first-response-time
    distributions.

    Closed figures cover conversations closed within [since, until); first-response figures
    the conversations first answered by an agent within it (whether closed or not); open
    figures are the conversations open at ``now``, with their age. Whole days come from the
    rollups (medians, p90s and maxima within ``RELATIVE_ERROR``); a range within a day and
    a query no rollup slice answers (two filters, or a filter on another slice) are computed
    by ``exact_report``.
    """
    if _whole_days(query) is None or _rollup_dimension(query, query.by) is None:
        return exact_report(store, query, now=now)
    dialect = _Dialect(store.dialect)
    with store.read() as tx:
        summaries = _rollup_summaries(tx, query, dialect, [query.by])[query.by]
        open_rows = _open_now(tx, query, dialect, now)
    return _from_summaries(query, now, summaries, open_rows)


def _days_of(query: ReportQuery, counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """``counts`` (per YYYY-MM-DD) for every day of the range, 0 where there is none."""
    days = []
    day = query.since.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < query.until:
        key = day.strftime("%Y-%m-%d")
        days.append({"day": key, "closed": counts.get(key, 0)})
        day += timedelta(days=1)
    return days


def closed_per_day(store: Store, query: ReportQuery) -> list[dict[str, Any]]:
    """Closed count for every day of the range (days with none included, as 0)."""
    report = conversation_report(store, ReportQuery(query.since, query.until, GroupBy.DAY,
                                                    query.filters), now=query.until)
    return _days_of(query, {group["key"]: group["closed"] for group in report["groups"]})


DASHBOARD_SLICES = (GroupBy.USER, GroupBy.TEAM, GroupBy.CHANNEL)


def dashboard_reports(store: Store, query: ReportQuery, *, now: datetime
                      ) -> tuple[dict[str, Any], dict[GroupBy, dict[str, Any]], list[dict[str, Any]]]:
    """What the dashboard shows at once: the report's totals, the report per user, team and
    channel, and the closed count per day. From the rollups, the whole days of every slice
    are read by one statement and the open conversations by another, in one read
    transaction; with filters no rollup answers, each part is computed as
    ``conversation_report`` does."""
    slices = (GroupBy.NONE, GroupBy.DAY, *DASHBOARD_SLICES)
    if _whole_days(query) is None or any(_rollup_dimension(query, by) is None for by in slices):
        reports = {by: conversation_report(store, ReportQuery(query.since, query.until, by,
                                                              query.filters), now=now)
                   for by in slices}
    else:
        dialect = _Dialect(store.dialect)
        with store.read() as tx:
            summaries = _rollup_summaries(tx, query, dialect, slices)
            open_rows = _open_now(tx, query, dialect, now)
        reports = {by: _from_summaries(ReportQuery(query.since, query.until, by, query.filters),
                                       now, summaries[by], open_rows) for by in slices}
    per_day = _days_of(query, {group["key"]: group["closed"]
                               for group in reports[GroupBy.DAY]["groups"]})
    return reports[GroupBy.NONE], {by: reports[by] for by in DASHBOARD_SLICES}, per_day


def rebuild_rollups(store: Store) -> dict[str, int]:
    """Recompute the report rollups from the conversations, in one transaction: how many
    conversations each measure counted (``resolution``, ``first_response``) and how many
    rollup rows were written (``rows``)."""
    return store.run(lambda tx: tx.rebuild_rollups())


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
