"""Facebook Messenger Platform webhook: verification handshake, signed batches of events.

``entry[].messaging[]`` items become engine events: ``message`` -> ``message.received``;
a ``postback`` whose payload is a configured Get Started payload -> ``welcome``, any other
postback -> ``message.received`` with the postback's title as text. Echoes of the page's
own messages, deliveries and reads are acknowledged and ignored.
"""
from __future__ import annotations

import hmac
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, jsonify, request

from rules_engine import Event, EventType
from rules_engine.model import ContactRef, Message

from .auth import require_signature
from .http import ApiError, json_body, raw_body, run_events
from .http import settings as app_settings

SIGNATURE_HEADER = "X-Hub-Signature-256"
CHANNEL = "facebook"

blueprint = Blueprint("facebook", __name__)


def _invalid(path: str, message: str) -> ApiError:
    return ApiError(400, "invalid_payload", message, path=path,
                    hint="send the Messenger Platform webhook format (object: page, entry[].messaging[])")


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(path, "expected a non-empty string")
    return value


def _timestamp(milliseconds: Any, path: str) -> datetime:
    if not isinstance(milliseconds, (int, float)) or isinstance(milliseconds, bool):
        raise _invalid(path, "expected a timestamp in milliseconds")
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc)


def _event(item: dict[str, Any], path: str, welcome_payloads: Iterable[str]) -> Event | None:
    sender = item.get("sender")
    if not isinstance(sender, dict):
        raise _invalid(f"{path}/sender", "expected an object with the sender's id")
    psid = _text(sender.get("id"), f"{path}/sender/id")
    at = _timestamp(item.get("timestamp"), f"{path}/timestamp")
    contact = ContactRef(external_id=psid)
    message = item.get("message")
    postback = item.get("postback")
    if isinstance(message, dict):
        if message.get("is_echo"):
            return None
        mid = _text(message.get("mid"), f"{path}/message/mid")
        text = message.get("text")
        if text is not None and not isinstance(text, str):
            raise _invalid(f"{path}/message/text", "expected a string")
        return Event(id=f"facebook:{mid}", type=EventType.MESSAGE_RECEIVED, channel=CHANNEL,
                     contact=contact, timestamp=at, message=Message(text=text or "", id=mid),
                     params={"attachments": message.get("attachments") or []})
    if isinstance(postback, dict):
        payload = postback.get("payload")
        title = postback.get("title")
        mid = postback.get("mid") or f"postback:{psid}:{item['timestamp']}"
        event_id = f"facebook:{mid}"
        params = {"payload": payload, "title": title}
        if payload in welcome_payloads:
            return Event(id=event_id, type=EventType.WELCOME, channel=CHANNEL, contact=contact,
                         timestamp=at, params=params)
        return Event(id=event_id, type=EventType.MESSAGE_RECEIVED, channel=CHANNEL,
                     contact=contact, timestamp=at,
                     message=Message(text=str(title or payload or ""), id=postback.get("mid")),
                     params=params)
    return None  # delivery, read, reaction...: acknowledged, nothing to apply


def parse_messenger_webhook(data: dict[str, Any], welcome_payloads: Iterable[str]) -> list[Event]:
    """Every event in a Messenger webhook body, in order; ApiError(400) naming a bad field."""
    if data.get("object") != "page":
        raise _invalid("object", "expected \"page\"")
    entries = data.get("entry")
    if not isinstance(entries, list):
        raise _invalid("entry", "expected a list")
    events = []
    payloads = tuple(welcome_payloads)
    for e, entry in enumerate(entries):
        messaging = entry.get("messaging") if isinstance(entry, dict) else None
        if not isinstance(messaging, list):
            raise _invalid(f"entry/{e}/messaging", "expected a list")
        for m, item in enumerate(messaging):
            if not isinstance(item, dict):
                raise _invalid(f"entry/{e}/messaging/{m}", "expected an object")
            event = _event(item, f"entry/{e}/messaging/{m}", payloads)
            if event is not None:
                events.append(event)
    return events


@blueprint.get("/webhooks/facebook")
def verify_subscription() -> Any:
    """The subscription handshake: echo ``hub.challenge`` when the verify token matches."""
    settings = app_settings()
    if settings.facebook_verify_token is None:
        raise ApiError(503, "not_configured", "FACEBOOK_VERIFY_TOKEN is not set")
    token = request.args.get("hub.verify_token", "")
    if request.args.get("hub.mode") != "subscribe" or not hmac.compare_digest(
            token.encode(), settings.facebook_verify_token.encode()):
        raise ApiError(403, "verification_failed", "hub.mode or hub.verify_token does not match")
    return request.args.get("hub.challenge", ""), 200, {"Content-Type": "text/plain"}


@blueprint.post("/webhooks/facebook")
def receive() -> Any:
    """A signed batch of Messenger events; each is applied once, in order."""
    settings = app_settings()
    require_signature(settings.facebook_app_secret, raw_body(),
                      request.headers.get(SIGNATURE_HEADER), prefix="sha256=",
                      header=SIGNATURE_HEADER, dev=settings.dev)
    events = parse_messenger_webhook(json_body(), settings.facebook_welcome_payloads)
    return jsonify({"results": run_events(events)})
