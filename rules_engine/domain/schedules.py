"""Schedules: when a ``schedule`` rule fires, from its cron, in the rule set's time zone.

The cron is read by cronsim (five fields: minute, hour, day of month, month, day of week,
with names such as ``mon`` and ``jan``, ``L`` for a month's last day and ``mon#1`` for its
first Monday), in local time: ``0 8 * * mon`` is 08:00 on Mondays in the zone whatever its
offset that day. On the day clocks go forward, a time that does not exist fires at the
first minute after the gap (``30 2 * * *`` at 03:00 in Paris); on the day they go back, a
fixed time that happens twice fires once, the first time (``*/30 * * * *`` fires in both
passes of the repeated hour, every 30 minutes of real time).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from rules_engine.domain.model import ContactRef, Event, EventType
from rules_engine.domain.timers import Timer

APPLIES_TO = ("contacts", "open_conversations")


class CronNeverFires(ValueError):
    """A cron that cannot be read, or names no moment that exists (``0 0 31 4 *``)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A ``schedule`` trigger: ``cron`` in the rule set's zone, run for each of the
    contacts (``contacts``) or of the contacts with an open conversation
    (``open_conversations``) that its conditions select."""

    cron: str
    applies_to: str

    def next_after(self, at: datetime, zone: ZoneInfo) -> datetime:
        """The first firing strictly after the aware instant ``at``, in UTC."""
        return next_firing(self.cron, at, zone)


def next_firing(cron: str, at: datetime, zone: ZoneInfo) -> datetime:
    """The first moment strictly after the aware instant ``at`` that ``cron`` names in
    ``zone``, in UTC; CronNeverFires when it names none (within cronsim's 50 years)."""
    try:
        # cronsim steps on by wall-clock time; on the day clocks go back an instant of the
        # repeated hour can read as a wall time already passed: skip to a later one
        return next(found.astimezone(timezone.utc) for found in CronSim(cron, at.astimezone(zone))
                    if found > at)
    except CronSimError as error:
        raise CronNeverFires(f"'{cron}' is not a cron that fires: {error}") from None
    except StopIteration:
        raise CronNeverFires(f"'{cron}' never fires (not once in 50 years)") from None


def cron_problem(cron: str) -> str | None:
    """Why ``cron`` never fires, or None when it does."""
    try:
        next_firing(cron, datetime(2026, 1, 1, tzinfo=timezone.utc), ZoneInfo("UTC"))
    except CronNeverFires as error:
        return str(error)
    return None


NO_CONTACT = 0  # a schedule's timer belongs to no contact (ids start at 1)


def schedule_timer(rule_id: str, schedule: Schedule, due: datetime, *, after: int = 0,
                   set_by: str = "schedule") -> Timer:
    """The one timer of schedule rule ``rule_id``: its next firing at ``due``, and the
    firing's progress (``after``: the last contact it has run for; 0 before the first)."""
    return Timer(f"schedule:{rule_id}", "schedule", NO_CONTACT, None, rule_id, due, set_by,
                 {"cron": schedule.cron, "applies_to": schedule.applies_to, "after": after})


def schedule_event(timer: Timer, contact_id: int, conversation_id: int | None) -> Event:
    """The engine event of a schedule's firing for one contact (the same id whoever runs
    it: the event ledger runs each firing once per contact)."""
    due = timer.due_at.isoformat()
    return Event(id=f"{timer.id}@{due}:{contact_id}", type=EventType.SCHEDULE, channel=None,
                 timestamp=timer.due_at, contact=ContactRef(id=contact_id),
                 conversation_id=conversation_id, params={"rule_id": timer.rule_id, "due": due})
