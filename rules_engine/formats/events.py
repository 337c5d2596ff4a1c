"""Parsing the channel-neutral event JSON into a typed ``Event`` (or a clear EventError)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from functools import cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, ValidationError

from rules_engine.domain.channels import welcome_channels
from rules_engine.domain.errors import EventError
from rules_engine.domain.model import ContactRef, Event, EventType, Message
from rules_engine.formats.schema import load_schema
from rules_engine.formats.schema_errors import explain


@cache
def _event_validator() -> Draft202012Validator:
    """The reference validator: its errors become the messages people read."""
    return Draft202012Validator(load_schema("event"))


@cache
def _fast_event_check() -> Callable[[Any], Any]:
    """The same schema compiled to Python once (fastjsonschema), for the common case of a
    valid event; formats are not asserted, as the reference does not assert them."""
    return fastjsonschema.compile(load_schema("event"), formats={"date-time": lambda _: True})


def schema_errors(data: Any) -> list[ValidationError]:
    """Every way ``data`` breaks ``event.schema.json``, by path (empty when it is valid)."""
    try:
        _fast_event_check()(data)
        return []
    except fastjsonschema.JsonSchemaException:
        pass
    return sorted(_event_validator().iter_errors(data),
                  key=lambda e: list(map(str, e.absolute_path)))


EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp with a time zone (``Z`` accepted), as an aware UTC datetime
    between the years 1970 and 2200."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise EventError("timestamp has no time zone", path="timestamp",
                             hint="add Z or an offset, e.g. 2026-11-25T10:00:00Z")
        moment = moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise EventError(f"'{value[:60]}' is not an ISO 8601 timestamp", path="timestamp",
                         hint="e.g. 2026-11-25T10:00:00Z") from None
    if not EARLIEST <= moment < LATEST:
        raise EventError(f"'{value[:60]}' is outside the years 1970 to 2200", path="timestamp",
                         hint="e.g. 2026-11-25T10:00:00Z")
    return moment


def parse_event(
    data: Any, *, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
) -> Event:
    """Validate event JSON against ``event.schema.json`` and build the ``Event``.

    Raises EventError naming the first problem's path (e.g. ``message/text``) and a hint.
    """
    errors = schema_errors(data)
    if errors:
        problem = explain(errors[0])[0]
        path = "/".join(str(p) for p in problem.path) or None
        raise EventError(problem.message, path=path, hint=problem.hint)
    event_type = EventType(data["type"])
    channel = data.get("channel", "api")
    if event_type is EventType.WELCOME and channel not in welcome_channels():
        raise EventError(f"channel '{channel}' has no welcome event", path="channel",
                         hint=f"welcome events come from: {', '.join(sorted(welcome_channels()))}")
    contact = data.get("contact", {})
    message = data.get("message")
    return Event(
        id=data["id"],
        type=event_type,
        channel=channel,
        contact=ContactRef(id=contact.get("id"), external_id=contact.get("external_id"),
                           name=contact.get("name")),
        timestamp=parse_timestamp(data["timestamp"]) if "timestamp" in data else clock(),
        message=_message(message) if message else None,
        params=data.get("params", {}),
        intent=data.get("intent"),
        actor=data.get("actor"),
        via=data.get("via"),
        conversation_id=data.get("conversation_id"),
        secondary_contact_id=data.get("secondary_contact_id"),
        secondary_identity=(
            (data["secondary_contact"]["channel"], data["secondary_contact"]["external_id"])
            if "secondary_contact" in data else None),
    )


def _message(data: dict[str, Any]) -> Message:
    return Message(text=data["text"], id=data.get("id"), quick_reply=data.get("quick_reply"),
                   postback=data.get("postback"),
                   attachments=tuple(data.get("attachments", ())),
                   reply_to=data.get("reply_to"), edited=data.get("edited", False))
