"""``POST /webhooks/events``: the channel-neutral event JSON, signed with a shared secret."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from rules_engine import RulesEngineError, parse_event

from .access import PLATFORM, access
from .auth import require_signature
from .http import ApiError, from_engine_error, json_body, raw_body, run_events
from .services import settings as app_settings

SIGNATURE_HEADER = "X-Signature-256"

blueprint = Blueprint("events", __name__)


@blueprint.post("/webhooks/events")
@access(PLATFORM)
def receive_events() -> Any:
    """One event object, or a list of them (each applied once, in order)."""
    settings = app_settings()
    require_signature(settings.webhook_secret, raw_body(), request.headers.get(SIGNATURE_HEADER),
                      prefix="sha256=", header=SIGNATURE_HEADER, env="RULES_ENGINE_WEBHOOK_SECRET", dev=settings.dev)
    data = json_body(expect=(dict, list))
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ApiError(400, "invalid_body", "the list of events is empty")
    events = []
    for index, item in enumerate(items):
        try:
            events.append(parse_event(item))
        except RulesEngineError as error:
            api_error = from_engine_error(error)
            if isinstance(data, list):
                api_error.path = f"{index}/{api_error.path or ''}".rstrip("/")
            raise api_error from None
    return jsonify({"results": run_events(events)})
