"""Parsing the channel-neutral event JSON into a typed ``Event`` (or a clear EventError)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from functools import cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, ValidationError

from rules_engine.domain.channels import welcome_channels
from rules_engine.domain.errors import EventError, nearest
from rules_engine.domain.model import (
    CUSTOM_PREFIX,
    ContactRef,
    Event,
    EventType,
    Message,
    event_type,
)
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


def _is_valid(data: Any) -> bool:
    """Whether ``data`` fits the schema, by the compiled check (microseconds)."""
    try:
        _fast_event_check()(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


KeyPath = tuple[str | int, ...]


def _schema_problems(data: Any) -> list[tuple[KeyPath, EventError]]:
    """Every way ``data`` breaks ``event.schema.json``, worded by the reference validator.

    An unknown ``type`` close to a known one is also checked as that type, so that what
    the corrected event would still lack is reported now, not after the fix."""
    problems = _explained(_event_validator().iter_errors(data))
    meant = _meant_type(data)
    if meant is not None:
        seen = {(path, problem.message) for path, problem in problems}
        for path, problem in _explained(_event_validator().iter_errors({**data, "type": meant})):
            if path != ("type",) and (path, problem.message) not in seen:
                hint = f"{problem.hint} (if the type is {meant})" if problem.hint else None
                problems.append((path, EventError(problem.message, path=problem.path, hint=hint)))
    return problems


def _explained(errors: Iterable[ValidationError]) -> list[tuple[KeyPath, EventError]]:
    """The problems of ``errors``, each with the path of the place it is about (a missing
    key's own path: it belongs where it would be written)."""
    return [(problem.path + ((problem.missing,) if problem.missing else ()),
             EventError(problem.message, path=_joined(problem.path), hint=problem.hint))
            for error in errors for problem in explain(error)]


def _joined(path: KeyPath) -> str | None:
    return "/".join(str(part) for part in path) or None


def _meant_type(data: Any) -> str | None:
    """The event type an unknown ``type`` is nearest to, if any."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return None
    known = load_schema("event")["properties"]["type"]["anyOf"][0]["enum"]
    if data["type"] in known or data["type"].startswith(CUSTOM_PREFIX):
        return None
    return nearest(data["type"], known)


def _value_problems(data: dict[str, Any]) -> list[tuple[KeyPath, EventError]]:
    """What the schema cannot say: a timestamp that is no time, a welcome on a channel
    that sends none."""
    problems: list[tuple[KeyPath, EventError]] = []
    if isinstance(data.get("timestamp"), str):
        try:
            parse_timestamp(data["timestamp"])
        except EventError as error:
            problems.append((("timestamp",), error))
    channel = data.get("channel")
    if data.get("type") == EventType.WELCOME and isinstance(channel, str) \
            and channel not in welcome_channels():
        problems.append((("channel",), EventError(
            f"channel '{channel}' has no welcome event", path="channel",
            hint=f"welcome events come from: {', '.join(sorted(welcome_channels()))}")))
    return problems


def _body_position(data: Any, path: KeyPath) -> tuple[int, ...]:
    """Where ``path`` is in the body: the place of each key among its object's keys (a
    missing key comes after them, where it would be written), of each item in its list."""
    position, node = [], data
    for part in path:
        if isinstance(node, dict):
            keys = list(node)
            position.append(keys.index(part) if part in node else len(keys))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            position.append(part)
            node = node[part]
        else:
            position.append(0)
            node = None
    return tuple(position)


def event_problems(data: Any) -> list[EventError]:
    """Every problem of one event's JSON, in the order of the body (a missing key after
    the keys of the object that lacks it); empty when it is valid."""
    problems = [] if _is_valid(data) else _schema_problems(data)
    if isinstance(data, dict):
        problems += _value_problems(data)
    distinct: dict[tuple[KeyPath, str], EventError] = {}
    for path, problem in problems:
        distinct.setdefault((path, problem.message), problem)
    ordered = sorted(distinct.items(), key=lambda item: _body_position(data, item[0][0]))
    return [problem for _, problem in ordered]


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

    Raises EventError naming the first problem's path (e.g. ``message/text``) and a hint,
    with every problem of the event in its ``problems`` (see ``event_problems``).
    """
    problems = event_problems(data)
    if problems:
        raise EventError.of_all(problems)
    kind = event_type(data["type"])
    channel = data.get("channel", "api")
    contact = data.get("contact", {})
    message = data.get("message")
    return Event(
        id=data["id"],
        type=kind,
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


# the custom events the rule files declare, each with its params' validator (None: free-form)
Declared = Mapping[str, Draft202012Validator | None]


def params_problems(validator: Draft202012Validator, params: Any, *,
                    templated: bool = False) -> list[EventError]:
    """How a custom event's ``params`` break its declared JSON Schema (``validator``), each
    at ``params/<place>`` with a hint; with ``templated``, a text holding ``{{ }}`` (known
    only when it is rendered) is not judged."""
    return [EventError(problem.message, hint=problem.hint, path=_joined(
                ("params", *problem.path, *((problem.missing,) if problem.missing else ()))))
            for error in validator.iter_errors(params)
            if not (templated and isinstance(error.instance, str) and "{{" in error.instance)
            for problem in explain(error)]


def _message(data: dict[str, Any]) -> Message:
    return Message(text=data["text"], id=data.get("id"), quick_reply=data.get("quick_reply"),
                   postback=data.get("postback"),
                   attachments=tuple(data.get("attachments", ())),
                   reply_to=data.get("reply_to"), edited=data.get("edited", False))
