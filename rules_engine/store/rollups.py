"""Report rollups: per measure, UTC day and slice value, the durations counted there (a
``durations.Summary``), kept in the transaction of the change they count.

A transaction notes its changes as it goes (``RollupChanges``); just before it commits they
are written in three statements whatever their number (missing rows inserted, the rows
locked in key order, then updated), so that concurrent writers always lock in one order
and hold the locks only for the end of their transaction. A savepoint that rolls back
takes its changes back too.

What a conversation counts for, and where (rules_engine.metrics reads the same slices from
the conversations rows themselves, and must agree):

- ``resolution``: when it closes, on the day of ``closed_at``, with ``resolution_seconds``,
  under every slice value it has then (a closed conversation never changes again);
- ``first_response``: when its first agent reply is recorded, on the day of
  ``first_response_at``, with ``first_response_seconds``; a later reassignment moves it from
  the old user and team to the new ones, and its close from close source "none" to the
  close's, so it is always counted under the conversation's current values.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, update

from rules_engine.domain.durations import (
    BUCKETS,
    FIRST_RESPONSE_BUCKETS,
    Buckets,
    Summary,
    add_to_stored,
    bucket_index,
    sketch_index,
    stored_summary,
)
from rules_engine.store import tables as t
from rules_engine.store.statements import Statements

r = t.report_rollups


@dataclass(frozen=True)
class Measure:
    """A duration the rollups count: its conversations columns and distribution buckets."""

    name: str
    at: str
    seconds: str
    buckets: Buckets


RESOLUTION = Measure("resolution", "closed_at", "resolution_seconds", BUCKETS)
FIRST_RESPONSE = Measure("first_response", "first_response_at", "first_response_seconds",
                         FIRST_RESPONSE_BUCKETS)
MEASURES = {measure.name: measure for measure in (RESOLUTION, FIRST_RESPONSE)}

# Slice -> the conversations column it reads ("none": every conversation, under one key).
DIMENSIONS: dict[str, str | None] = {
    "none": None, "user": "assignee", "team": "team", "channel": "channel",
    "open_source": "open_source", "close_source": "close_source"}

# (measure, day, dimension, key): a rollup row's identity; a key of None is kept as
# keyed=False (a primary key column cannot hold NULL).
Slot = tuple[str, str, str, str | None]


def utc_day(column: Any, dialect: str) -> Any:
    """The UTC day of a timestamp column as YYYY-MM-DD (SQLite stores UTC as ISO text)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.substr(column, 1, 10)


def _day(at: datetime) -> str:
    return at.strftime("%Y-%m-%d")  # the store's timestamps are UTC


@dataclass
class _Delta:
    """What one transaction changes in one rollup row."""

    measure: Measure
    count: int = 0
    seconds: int = 0
    buckets: list[int] = field(default_factory=list)
    sketch: dict[int, int] = field(default_factory=dict)

    def add(self, seconds: int, times: int) -> None:
        self.count += times
        self.seconds += seconds * times
        if not self.buckets:
            self.buckets = [0] * len(self.measure.buckets)
        self.buckets[bucket_index(seconds, self.measure.buckets)] += times
        index = sketch_index(seconds)
        self.sketch[index] = self.sketch.get(index, 0) + times


class RollupChanges:
    """The rollup changes a transaction made so far (``Rollups.flush_rollups`` writes them)."""

    def __init__(self) -> None:
        self._changes: list[tuple[Slot, int, int]] = []  # (slot, seconds, +1 / -1)

    def mark(self) -> int:
        """Where a savepoint starts (``undo`` goes back to it)."""
        return len(self._changes)

    def undo(self, mark: int) -> None:
        """Forget the changes made since ``mark`` (their savepoint rolled back)."""
        del self._changes[mark:]

    def count(self, measure: Measure, row: Mapping[str, Any], *, times: int = 1,
              dimensions: Iterable[str] = DIMENSIONS) -> None:
        """Count a conversation's (a row of ``conversations``) ``measure`` under each of
        ``dimensions``' values, ``times`` times (-1 takes it out)."""
        day, seconds = _day(row[measure.at]), row[measure.seconds]
        for dimension in dimensions:
            column = DIMENSIONS[dimension]
            key = row[column] if column is not None else None
            self._changes.append(((measure.name, day, dimension, key), seconds, times))

    def move(self, measure: Measure, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        """A counted conversation's slice values changed: move it to the new ones."""
        changed = [dimension for dimension, column in DIMENSIONS.items()
                   if column is not None and before[column] != after[column]]
        if changed:
            self.count(measure, before, times=-1, dimensions=changed)
            self.count(measure, after, dimensions=changed)

    def take(self) -> dict[Slot, _Delta]:
        """The changes per rollup row (those that change something), forgotten here."""
        deltas: dict[Slot, _Delta] = {}
        for slot, seconds, times in self._changes:
            delta = deltas.get(slot)
            if delta is None:
                delta = deltas[slot] = _Delta(MEASURES[slot[0]])
            delta.add(seconds, times)
        self._changes.clear()
        for delta in deltas.values():
            delta.sketch = {index: change for index, change in delta.sketch.items() if change}
        return {slot: delta for slot, delta in deltas.items() if delta.sketch}


class Rollups(Statements):
    """The rollups' part of a unit of work: its changes, written just before it commits."""

    def __init__(self, connection: Connection, dialect: str) -> None:
        super().__init__(connection, dialect)
        self.rollups = RollupChanges()

    def flush_rollups(self) -> None:
        """Write the changes noted so far in three statements, in key order (nothing noted:
        none): insert the missing rows, lock them all, update them."""
        deltas = self.rollups.take()
        if not deltas:
            return
        slots = sorted(deltas, key=_order)
        self._prepared("rollup-insert", self._insert_statement).many(
            self.connection, [{**_slot_values(slot), "p_buckets": _ZEROS} for slot in slots])
        rows = self._prepared(f"rollup-lock:{len(slots)}",
                              lambda: self._lock_statement(len(slots))).rows(
            self.connection, {f"{name}{n}": value for n, slot in enumerate(slots)
                              for name, value in _slot_values(slot).items()})
        updates = []
        for row in rows:
            slot = _slot_of(row)
            delta = deltas[slot]
            buckets, offset, sketch = add_to_stored(
                row["buckets"], row["sketch_offset"], row["sketch"], delta.buckets, delta.sketch)
            updates.append({**_slot_values(slot), "p_count": row["count"] + delta.count,
                            "p_seconds": row["seconds"] + delta.seconds, "p_buckets": buckets,
                            "p_offset": offset, "p_sketch": sketch})
        self._prepared("rollup-update", _update_statement).many(self.connection, updates)

    def _insert_statement(self) -> Any:
        values = {name: bindparam(f"p_{name}", type_=r.c[name].type) for name in _KEY}
        return self._insert(r).values(
            **values, count=0, seconds=0, buckets=bindparam("p_buckets", type_=r.c.buckets.type),
            sketch_offset=0, sketch=b"").on_conflict_do_nothing(index_elements=list(_KEY))

    def _lock_statement(self, size: int) -> Any:
        """The rows of ``size`` slots, locked (PostgreSQL) in key order: text compared byte
        by byte (collation "C"), as Python compares the slots it inserted in that order."""
        def text(column: Any) -> Any:
            return column.collate("C") if self._dialect == "postgresql" else column

        match = or_(*(and_(*(r.c[name] == bindparam(f"p_{name}{n}", type_=r.c[name].type)
                             for name in _KEY)) for n in range(size)))
        return (select(r).where(match)
                .order_by(text(r.c.measure), text(r.c.dimension), text(r.c.day), r.c.keyed,
                          text(r.c.key))
                .with_for_update())

    def rebuild_rollups(self) -> dict[str, int]:
        """Recompute every rollup row from the conversations, in this transaction (what was
        there is replaced): how many conversations each measure counted, and how many rows
        were written (``rows``)."""
        return rebuild(self.connection, self._dialect)


_ZEROS = stored_summary(Summary(10))[0]


def _order(slot: Slot) -> tuple[str, str, str, bool, str]:
    """The rollup rows' primary key, in its order (``_lock_statement`` sorts alike)."""
    measure, day, dimension, key = slot
    return measure, dimension, day, key is not None, key or ""


def _slot_values(slot: Slot) -> dict[str, Any]:
    measure, dimension, day, keyed, key = _order(slot)
    return {"p_measure": measure, "p_day": day, "p_dimension": dimension, "p_keyed": keyed,
            "p_key": key}


def _slot_of(row: Mapping[str, Any]) -> Slot:
    return row["measure"], row["day"], row["dimension"], row["key"] if row["keyed"] else None


_KEY = ("measure", "dimension", "day", "keyed", "key")


def _update_statement() -> Any:
    return (update(r).where(*(r.c[name] == bindparam(f"p_{name}", type_=r.c[name].type)
                              for name in _KEY))
            .values(count=bindparam("p_count"), seconds=bindparam("p_seconds"),
                    buckets=bindparam("p_buckets", type_=r.c.buckets.type),
                    sketch_offset=bindparam("p_offset"),
                    sketch=bindparam("p_sketch", type_=r.c.sketch.type)))


# -- reading and rebuilding ----------------------------------------------------------------


@dataclass(frozen=True)
class StoredRollup:
    """One rollup row as read: what it counts, and its summary as kept."""

    measure: str
    dimension: str
    day: str
    key: str | None
    count: int
    seconds: int
    buckets: bytes
    sketch_offset: int
    sketch: bytes

    def add_to(self, summary: Summary) -> None:
        """Add this row's durations to ``summary``."""
        summary.merge_stored(self.count, self.seconds, self.buckets, self.sketch_offset,
                             self.sketch)


def read_rollups(connection: Connection, measures: list[str], dimensions: list[str], *,
                 first_day: str, end_day: str, key: tuple[str | None] | None = None
                 ) -> list[StoredRollup]:
    """The rollup rows of ``measures`` and ``dimensions`` for the days ``first_day`` <= day
    < ``end_day`` (only those of ``key`` when given), in one statement; rows whose
    conversations all moved to other values (a count of 0) are left out."""
    statement = select(r.c.measure, r.c.dimension, r.c.day, r.c.keyed, r.c.key, r.c.count,
                       r.c.seconds, r.c.buckets, r.c.sketch_offset, r.c.sketch).where(
        r.c.measure.in_(measures), r.c.dimension.in_(dimensions), r.c.day >= first_day,
        r.c.day < end_day, r.c.count != 0)
    if key is not None:
        statement = statement.where(r.c.keyed == (key[0] is not None), r.c.key == (key[0] or ""))
    return [StoredRollup(measure, dimension, day, key_ if keyed else None, count, seconds,
                         buckets, offset, sketch)
            for measure, dimension, day, keyed, key_, count, seconds, buckets, offset, sketch
            in connection.execute(statement)]


def _history(connection: Connection, dialect: str, measure: Measure) -> Iterator[Any]:
    """Every counted conversation of ``measure``: (day, seconds, its slice values)."""
    c = t.conversations
    columns = [c.c[column] for column in DIMENSIONS.values() if column]
    statement = (select(utc_day(c.c[measure.at], dialect), c.c[measure.seconds], *columns)
                 .where(c.c[measure.at].is_not(None), c.c[measure.seconds].is_not(None)))
    return iter(connection.execute(statement.execution_options(yield_per=50_000)))


def rebuild(connection: Connection, dialect: str) -> dict[str, int]:
    """Recompute every rollup row from the conversations (in the connection's transaction):
    what was there is replaced. Returns how many conversations each measure counted, and
    how many rows were written (``rows``)."""
    connection.execute(delete(r))
    written: dict[str, int] = {"rows": 0}
    names = [name for name, column in DIMENSIONS.items() if column]
    for measure in MEASURES.values():
        summaries: dict[Slot, Summary] = {}
        counted = 0
        for day, seconds, *values in _history(connection, dialect, measure):
            counted += 1
            bucket, index = bucket_index(seconds, measure.buckets), sketch_index(seconds)
            for dimension, key in itertools.chain((("none", None),), zip(names, values)):
                slot = (measure.name, day, dimension, key)
                summary = summaries.get(slot)
                if summary is None:
                    summary = summaries[slot] = Summary(len(measure.buckets))
                summary.add_indexed(seconds, bucket, index)
        written[measure.name] = counted
        rows = []
        for slot, summary in sorted(summaries.items(), key=lambda item: _order(item[0])):
            buckets, offset, sketch = stored_summary(summary)
            measure_name, dimension, day, keyed, key = _order(slot)
            rows.append({"measure": measure_name, "day": day, "dimension": dimension,
                         "keyed": keyed, "key": key, "count": summary.count,
                         "seconds": summary.seconds, "buckets": buckets,
                         "sketch_offset": offset, "sketch": sketch})
        for start in range(0, len(rows), 5_000):
            connection.execute(r.insert(), rows[start:start + 5_000])
        written["rows"] += len(rows)
    return written
