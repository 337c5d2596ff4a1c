"""The outbox's rows and what the workers share about sending (pauses, pacing, counts),
inside a unit of work. The core queues rows and moves them on the platforms' status
callbacks; the outbox worker claims, finishes, paces and pauses; the API lists and retries.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, or_, select, update

from rules_engine.domain.model import MOVES_FROM, RETRYABLE_STATUSES, OutboxStatus
from rules_engine.store import tables as t
from rules_engine.store.statements import Statements

EPOCH = datetime.fromisoformat("2000-01-01T00:00:00+00:00")


def _filters(*, status: str | None = None, channel: str | None = None,
             kind: str | None = None) -> list[Any]:
    o = t.outbox
    return [clause for clause, given in ((o.c.status == status, status),
                                         (o.c.channel == channel, channel),
                                         (o.c.error_kind == kind, kind)) if given is not None]


class OutboundTx(Statements):
    """Reads and writes of the outbox, on the unit of work's connection."""

    # -- rows ------------------------------------------------------------------------

    def enqueue(self, *, values: Mapping[str, Any], at: datetime) -> int:
        """Add a pending row, due at once (``values``: the outbox's columns that describe
        the call; ``at``: the event's time); returns its id. Its age, which ends its
        retries, runs from now."""
        row = self._insert_row(t.outbox, {
            **values, "status": OutboxStatus.PENDING, "attempts": 0, "next_attempt_at": at,
            "created_at": at, "queued_at": datetime.now(timezone.utc)}, "id")
        assert row is not None
        return int(row["id"])

    def claim(self, *, worker: str, now: datetime, lease_until: datetime,
              limit: int) -> list[dict[str, Any]]:
        """Lease up to ``limit`` due rows to ``worker``: rows other workers hold, and rows of
        a paused channel, are skipped."""
        o = t.outbox
        due = (
            select(o.c.id)
            .where(o.c.status == OutboxStatus.PENDING, o.c.next_attempt_at <= now,
                   or_(o.c.lease_expires_at.is_(None), o.c.lease_expires_at < now),
                   or_(o.c.channel.is_(None),
                       o.c.channel.not_in(select(t.channel_pauses.c.channel))))
            .order_by(o.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(o)
            .where(o.c.id.in_(due.scalar_subquery()))
            .values(lease_expires_at=lease_until, locked_by=worker, attempts=o.c.attempts + 1)
            .returning(*o.c)
        )
        return sorted((dict(row) for row in self.connection.execute(statement).mappings()),
                      key=lambda row: row["id"])

    def finish(self, outbox_id: int, *, worker: str, values: Mapping[str, Any]) -> bool:
        """Record an attempt's result, if ``worker`` still holds the row's lease."""
        o = t.outbox
        result = self.connection.execute(
            update(o)
            .where(o.c.id == outbox_id, o.c.status == OutboxStatus.PENDING, o.c.locked_by == worker)
            .values(lease_expires_at=None, locked_by=None, **values))
        return result.rowcount == 1

    def rows(self, *, status: str | None = None, channel: str | None = None,
             kind: str | None = None, limit: int) -> list[dict[str, Any]]:
        """Rows, newest first, optionally of one status, channel and error kind."""
        statement = (select(t.outbox).where(*_filters(status=status, channel=channel, kind=kind))
                     .order_by(t.outbox.c.id.desc()).limit(limit))
        return [dict(row) for row in self.connection.execute(statement).mappings()]

    def requeue(self, *, now: datetime, outbox_id: int | None = None, status: str | None = None,
                channel: str | None = None, kind: str | None = None) -> list[int]:
        """Send failed (or suppressed) rows again, attempts and age starting over; the ids."""
        o = t.outbox
        chosen = _filters(status=status, channel=channel, kind=kind)
        if outbox_id is not None:
            chosen.append(o.c.id == outbox_id)
        result = self.connection.execute(
            update(o).where(o.c.status.in_(RETRYABLE_STATUSES), *chosen)
            .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now, queued_at=now,
                    error_kind=None, error_code=None, error_message=None)
            .returning(o.c.id))
        return sorted(row[0] for row in result)

    # -- status callbacks ---------------------------------------------------------------

    def by_platform_id(self, channel: str, platform_message_id: str) -> dict[str, Any] | None:
        """The row the platform knows by this message id."""
        o = t.outbox
        row = self.connection.execute(select(o).where(
            o.c.channel == channel, o.c.platform_message_id == platform_message_id)
        ).mappings().first()
        return dict(row) if row else None

    def sent_before(self, channel: str, recipient: str, watermark: datetime) -> list[dict[str, Any]]:
        """The rows sent to ``recipient`` at or before ``watermark`` that a callback can still
        move on (Messenger names a time, not a message)."""
        o = t.outbox
        statement = select(o).where(
            o.c.channel == channel, o.c.recipient == recipient, o.c.sent_at <= watermark,
            o.c.status.in_((OutboxStatus.SENT, OutboxStatus.DELIVERED))).order_by(o.c.id)
        return [dict(row) for row in self.connection.execute(statement).mappings()]

    def move(self, outbox_id: int, status: OutboxStatus, at: datetime,
             error: Mapping[str, Any] | None = None) -> bool:
        """Move a sent row on to ``status`` (delivered, read, failed), never back: a late
        ``delivered`` after ``read`` changes nothing. Whether it moved."""
        o = t.outbox
        values: dict[str, Any] = {"status": status}
        if status is OutboxStatus.DELIVERED:
            values["delivered_at"] = at
        elif status is OutboxStatus.READ:
            values.update(read_at=at, delivered_at=func.coalesce(o.c.delivered_at, at))
        else:
            error = error or {}
            values.update(error_kind=error.get("kind"), error_code=error.get("code"),
                          error_message=error.get("message"))
        result = self.connection.execute(update(o).where(
            o.c.id == outbox_id, o.c.status.in_(MOVES_FROM[status])).values(**values))
        return result.rowcount == 1

    # -- pauses ---------------------------------------------------------------------------

    def pause(self, channel: str, *, at: datetime, code: str | None, message: str) -> bool:
        """Stop calling ``channel``; False when it was already paused."""
        inserted = self.connection.execute(self._insert(t.channel_pauses).values(
            channel=channel, paused_at=at, code=code, message=message
        ).on_conflict_do_nothing(index_elements=["channel"]).returning(t.channel_pauses.c.channel))
        return inserted.first() is not None

    def resume(self, channel: str) -> bool:
        """Call ``channel`` again; False when it was not paused."""
        result = self.connection.execute(
            delete(t.channel_pauses).where(t.channel_pauses.c.channel == channel))
        return result.rowcount == 1

    def is_paused(self, channel: str) -> bool:
        return self.connection.execute(select(t.channel_pauses.c.channel).where(
            t.channel_pauses.c.channel == channel)).first() is not None

    def pauses(self) -> list[dict[str, Any]]:
        statement = select(t.channel_pauses).order_by(t.channel_pauses.c.channel)
        return [dict(row) for row in self.connection.execute(statement).mappings()]

    # -- pacing -------------------------------------------------------------------------

    def take_turn(self, intervals: Mapping[str, float], now: datetime) -> datetime | None:
        """Take the next call's turn on every key (``intervals``: key -> seconds between
        calls) at once: None when granted, else the time when all keys are free again.
        The keys' rows are locked in order, so workers on any host take turns one by one."""
        p = t.outbound_pace
        keys = sorted(intervals)
        self.connection.execute(self._insert(p).values(
            [{"key": key, "next_at": EPOCH} for key in keys]
        ).on_conflict_do_nothing(index_elements=["key"]))
        held = self.connection.execute(
            select(p.c.next_at).where(p.c.key.in_(keys)).order_by(p.c.key).with_for_update()
        ).scalars().all()
        free_at = max(held)
        if free_at > now:
            return free_at
        for key in keys:
            self.connection.execute(update(p).where(p.c.key == key).values(
                next_at=now + timedelta(seconds=intervals[key])))
        return None

    # -- what /metrics shows -----------------------------------------------------------------

    def count(self, channel: str, outcome: str) -> None:
        """Count one delivery attempt's outcome."""
        d = t.outbound_deliveries
        statement = self._insert(d).values(channel=channel, outcome=outcome, count=1)
        self.connection.execute(statement.on_conflict_do_update(
            index_elements=["channel", "outcome"], set_={"count": d.c.count + 1}))

    def counts(self) -> list[tuple[str, str, int]]:
        """(channel, outcome, attempts) for every outcome seen."""
        d = t.outbound_deliveries
        return [tuple(row) for row in self.connection.execute(
            select(d.c.channel, d.c.outcome, d.c.count))]

    def by_status(self) -> list[tuple[str, str, int]]:
        """(status, channel or "", rows)."""
        o = t.outbox
        statement = (select(o.c.status, func.coalesce(o.c.channel, ""), func.count())
                     .group_by(o.c.status, o.c.channel))
        return [tuple(row) for row in self.connection.execute(statement)]

    def oldest_pending(self) -> datetime | None:
        """When the oldest pending row was queued."""
        o = t.outbox
        return self.connection.execute(
            select(func.min(o.c.queued_at)).where(o.c.status == OutboxStatus.PENDING)
        ).scalar_one_or_none()
