"""``POST /webhooks/events``: the channel-neutral event JSON, signed with a shared secret."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from rules_engine import Event, EventError, parse_event

from .access import PLATFORM, access
from .auth import require_signature
from .http import ApiError, at_index, invalid_events, json_body, raw_body, run_events
from .services import settings as app_settings

SIGNATURE_HEADER = "X-Signature-256"

blueprint = Blueprint("events", __name__)


@blueprint.post("/webhooks/events")
@access(PLATFORM)
def receive_events() -> Any:
    """One event object, or a list of them (each applied once, in order); a body with any
    problem is refused whole, with every problem of every event listed."""
    settings = app_settings()
    require_signature(settings.webhook_secret, raw_body(), request.headers.get(SIGNATURE_HEADER),
                      prefix="sha256=", header=SIGNATURE_HEADER, env="RULES_ENGINE_WEBHOOK_SECRET", dev=settings.dev)
    data = json_body(expect=(dict, list))
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ApiError(400, "invalid_body", "the list of events is empty")
    return jsonify({"results": run_events(_parse_all(items, listed=isinstance(data, list)))})


def _parse_all(items: list[Any], *, listed: bool) -> list[Event]:
    """Every item as an Event, or a 422 listing every problem of every item (in a list,
    each problem's path starts with its event's index)."""
    events: list[Event] = []
    problems: list[EventError] = []
    for index, item in enumerate(items):
        try:
            events.append(parse_event(item))
        except EventError as error:
            problems += [EventError(p.message, path=at_index(index, p.path), hint=p.hint)
                         if listed else p for p in error.problems]
    if problems:
        raise invalid_events(problems)
    return events
