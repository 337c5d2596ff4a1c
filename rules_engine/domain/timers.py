"""Durable timers: what rules ask to happen later, kept as rows in the store.

Two kinds, both written in the transaction of the event that sets them (so they survive
restarts and are never lost or set twice), both fired by ``Engine.fire_due``:

- an **idle clock**, one per (``conversation.idle`` rule, open conversation): set when the
  conversation opens, pushed forward by every message that counts for the rule (``of``),
  dropped when the conversation closes; when it runs out the rule's ``conversation.idle``
  event fires, once;
- a **wait**, one per ``wait`` action run: the rest of the rule's actions run when it is
  over; it belongs to the conversation open when it began and is dropped when that closes;
- a **date**, one per (``date`` rule, contact whose field holds a date): set, moved or
  dropped in the transaction that changes the field; when it comes the rule's ``date``
  event fires, once.

Times follow the events' timestamps (a clock only ever moves forward), so replaying
history or ingesting old events sets the same timers. A timer fires only if it is still due
when it fires: its row is taken out, unchanged, under its contact's lock, in the firing's
transaction (a clock a message moved on meanwhile waits on). A firing is an engine event
whose id is the timer's id and due time, so the event ledger makes each firing happen once,
however many ``tick`` processes run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from rules_engine.domain.model import ContactRef, Conversation, Event, EventType

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"[1-9][0-9]{0,5}[smhd]")  # the schemas' $defs/duration


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``2h``, ``1d`` (the schema has checked the shape)."""
    return timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])


def duration_option(text: str) -> timedelta:
    """An argparse type: ``30s``, ``10m``, ``25h``, ``2d``."""
    if not DURATION.fullmatch(text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration such as 30s, 10m, 25h or 2d")
    return parse_duration(text)


@dataclass(frozen=True, slots=True)
class IdleClock:
    """A ``conversation.idle`` trigger: fire after ``after`` without a message of ``of``."""

    after: timedelta
    of: str  # "any", "contact" or "agent"
    text: str  # as written, e.g. "24h"

    def restarted_by(self, sender: str) -> bool:
        """Whether a message from ``sender`` ("contact", "agent" or "bot") restarts this
        clock: any message restarts ``of: any``; only the contact's, ``of: contact``; only
        an agent's, ``of: agent``."""
        return self.of in ("any", sender)


@dataclass(frozen=True, slots=True)
class DateTrigger:
    """A ``date`` trigger: fire ``offset`` days from the date in the contact's ``field``, at
    the local time ``at``."""

    field: str  # the name under contact.fields
    offset: int  # days, e.g. -3
    at: time

    def due(self, value: object, zone: ZoneInfo) -> datetime | None:
        """When the trigger fires for a field holding ``value``, in UTC; None when the value
        is not a date (``2027-01-31``, or the date part of an ISO date-time).

        The local time is read with ``zone``'s offset before any change that day (fold 0):
        an ambiguous time (the hour clocks repeat in autumn) is its first occurrence, and a
        nonexistent one (the hour clocks skip in spring) falls an hour later, as many
        clocks show it (02:30 becomes 03:30)."""
        day = as_date(value)
        if day is None:
            return None
        local = datetime.combine(day + timedelta(days=self.offset), self.at, tzinfo=zone)
        return local.astimezone(timezone.utc)


def as_date(value: object) -> date | None:
    """The date ``value`` holds (a date, or text in ISO form: ``2027-01-31``, or the date
    part of ``2027-01-31T10:00:00``); None for anything else."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}(T.*)?", value):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:  # 2027-02-30
        return None


@dataclass(frozen=True, slots=True)
class Timer:
    """One timer row."""

    id: str
    kind: str  # "idle", "wait" or "date"
    contact_id: int
    conversation_id: int | None
    rule_id: str
    due_at: datetime
    set_by_event: str
    payload: dict[str, Any]

    def event(self) -> Event:
        """The engine event of this timer's firing (the same id whoever fires it)."""
        kind = _FIRES[self.kind]
        return Event(id=f"timer:{self.id}@{self.due_at.isoformat()}", type=kind,
                     channel=self.payload.get("channel"), timestamp=self.due_at,
                     contact=ContactRef(id=self.contact_id),
                     conversation_id=self.conversation_id,
                     params={"timer": self.id, "rule_id": self.rule_id, **self.payload})


_FIRES = {"idle": EventType.CONVERSATION_IDLE, "wait": EventType.WAIT_ENDED,
          "date": EventType.DATE}


def date_timer_id(rule_id: str, contact_id: int) -> str:
    """A date timer's id: one per (rule, contact)."""
    return f"date:{rule_id}:{contact_id}"


def date_timer(rule_id: str, trigger: DateTrigger, *, contact_id: int, value: object,
               zone: ZoneInfo, after: datetime, event_id: str) -> Timer | None:
    """The date timer of ``rule_id`` for a contact whose field now holds ``value``; None
    when the value is not a date, or its moment is not after ``after`` (a date already
    past sets nothing: a reminder never fires late)."""
    due = trigger.due(value, zone)
    if due is None or due <= after:
        return None
    return Timer(date_timer_id(rule_id, contact_id), "date", contact_id, None, rule_id, due,
                 event_id, {"field": trigger.field, "date": str(value)})


def idle_timer(rule_id: str, clock: IdleClock, *, contact_id: int, conversation: Conversation,
               at: datetime, event_id: str) -> Timer:
    """The idle clock of ``rule_id`` on a conversation, running out ``clock.after`` from ``at``."""
    return Timer(f"idle:{rule_id}:{conversation.id}", "idle", contact_id, conversation.id,
                 rule_id, at + clock.after, event_id,
                 {"for": clock.text, "of": clock.of, "channel": conversation.channel})


def wait_timer_id(event_id: str, rule_id: str, sequence: int) -> str:
    """A wait's id: the event that began it (digested: ids stay short), the rule, and the
    wait's place among this event's waits."""
    return f"wait:{hashlib.sha256(event_id.encode()).hexdigest()[:16]}:{rule_id}:{sequence}"


def actions_digest(actions: list[tuple[str, Any]]) -> str:
    """A short fingerprint of a rule's actions (names and arguments): a wait resumes only
    a rule whose actions are still the ones it was written with."""
    text = json.dumps(actions, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
