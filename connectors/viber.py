"""Viber REST bot callbacks, signed with ``X-Viber-Content-Signature`` (HMAC-SHA256, auth token).

``conversation_started`` -> ``welcome``; ``message`` -> ``message.received``;
``subscribed``, ``unsubscribed``, ``seen``, ``delivered``, ``failed`` and the ``webhook``
set-up check are acknowledged and change nothing.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, jsonify, request

from rules_engine import Event, EventType
from rules_engine.model import ContactRef, Message

from .auth import require_signature
from .http import ApiError, json_body, raw_body, run_events
from .http import settings as app_settings

SIGNATURE_HEADER = "X-Viber-Content-Signature"
CHANNEL = "viber"
ACKNOWLEDGED = frozenset({"subscribed", "unsubscribed", "seen", "delivered", "failed", "webhook",
                          "client_status"})

blueprint = Blueprint("viber", __name__)


def _invalid(path: str, message: str) -> ApiError:
    return ApiError(400, "invalid_payload", message, path=path,
                    hint="send the Viber REST bot API callback format")


def _user(data: dict[str, Any], key: str) -> ContactRef:
    user = data.get(key)
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise _invalid(f"{key}/id", "expected the Viber user's id")
    name = user.get("name")
    return ContactRef(external_id=user["id"], name=name if isinstance(name, str) else None)


def parse_viber_callback(data: dict[str, Any]) -> Event | None:
    """The engine event for one Viber callback, or None for one that changes nothing."""
    kind = data.get("event")
    if not isinstance(kind, str):
        raise _invalid("event", "expected the callback's event name")
    if kind in ACKNOWLEDGED:
        return None
    token = data.get("message_token")
    timestamp = data.get("timestamp")
    if not isinstance(token, int) or isinstance(token, bool):
        raise _invalid("message_token", "expected a number")
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        raise _invalid("timestamp", "expected a timestamp in milliseconds")
    at = datetime.fromtimestamp(timestamp / 1000, tz=timezone.utc)
    event_id = f"viber:{token}"
    if kind == "conversation_started":
        return Event(id=event_id, type=EventType.WELCOME, channel=CHANNEL,
                     contact=_user(data, "user"), timestamp=at,
                     params={"context": data.get("context"), "subscribed": data.get("subscribed")})
    if kind == "message":
        message = data.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise _invalid("message", "expected an object with the message type")
        text = message.get("text", "")
        if not isinstance(text, str):
            raise _invalid("message/text", "expected a string")
        return Event(id=event_id, type=EventType.MESSAGE_RECEIVED, channel=CHANNEL,
                     contact=_user(data, "sender"), timestamp=at,
                     message=Message(text=text, id=str(token)),
                     params={"message_type": message["type"],
                             "tracking_data": message.get("tracking_data")})
    raise _invalid("event", f"unknown Viber event '{kind}'")


@blueprint.post("/webhooks/viber")
def receive() -> Any:
    """One Viber callback."""
    settings = app_settings()
    require_signature(settings.viber_auth_token, raw_body(),
                      request.headers.get(SIGNATURE_HEADER), header=SIGNATURE_HEADER,
                      dev=settings.dev)
    event = parse_viber_callback(json_body())
    return jsonify({"results": run_events([event] if event else [])})
