"""Viber (REST Bot API callbacks, ``send_message``): channel ``viber``.

One callback per request, signed with ``X-Viber-Content-Signature`` (hex HMAC-SHA256 of
the body keyed with the bot's auth token):

- ``conversation_started`` (the person opened a 1-on-1 chat with the bot) -> ``welcome``
  with ``params.context`` (the deep-link context) and ``params.subscribed``;
- ``message`` -> ``message.received``: text, and media (``picture``, ``video``, ``file``,
  ``sticker``, ``url``, ``contact``, ``location``) as ``message.attachments``;
- ``unsubscribed`` -> ``contact.unsubscribed``;
- ``subscribed``, ``delivered``, ``seen``, ``failed``, ``client_status`` and the ``webhook``
  set-up check are skipped with their name as the reason.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rules_engine import Event, EventType
from rules_engine.model import ContactRef, Message

from ..auth import require_signature
from .base import (
    OPTION,
    Answer,
    AnswerKind,
    Attachments,
    ChannelAdapter,
    Collector,
    ItemError,
    Outbound,
    Parsed,
    Setting,
    Verdict,
    display_name,
    epoch_time,
    http_verdict,
    identifier,
    json_object,
    mapping,
    not_this_format,
    optional_text,
)

SIGNATURE_HEADER = "X-Viber-Content-Signature"
ACKNOWLEDGED = frozenset({"subscribed", "delivered", "seen", "failed", "webhook", "client_status"})
# Viber's message types -> the core's attachment types (``text`` has none).
MEDIA_TYPES = {"picture": "image", "video": "video", "file": "file", "sticker": "sticker",
               "url": "link", "contact": "contact", "location": "location"}


class Viber(ChannelAdapter):
    name = "viber"
    channel = "viber"
    title = "Viber REST Bot API"
    has_welcome = True
    auth_schemes = {"viberSignature": {
        "type": "apiKey", "in": "header", "name": SIGNATURE_HEADER,
        "description": "hex HMAC-SHA256 of the raw body keyed with VIBER_AUTH_TOKEN"}}
    settings = (
        Setting("viber_auth_token", "VIBER_AUTH_TOKEN",
                "the bot's auth token: checks X-Viber-Content-Signature, and sends replies"),
        Setting("viber_sender_name", "VIBER_SENDER_NAME", "the sender name shown on replies",
                role=OPTION, default="Support"),
    )

    def authenticate(self, body: bytes, headers: Mapping[str, str], *,
                     config: Mapping[str, Any], dev: bool) -> None:
        require_signature(config.get("viber_auth_token"), body, headers.get(SIGNATURE_HEADER),
                          header=SIGNATURE_HEADER, env="VIBER_AUTH_TOKEN", dev=dev)

    def parse(self, body: bytes, headers: Mapping[str, str], *, config: Mapping[str, Any],
              received_at: datetime) -> Parsed:
        data = json_object(body, title=self.title)
        kind = data.get("event")
        if not isinstance(kind, str):
            raise not_this_format("event", "expected the callback's event name", title=self.title)
        found = Collector()
        with found.item(""):
            if kind in ACKNOWLEDGED:
                found.skip("event", kind)
            elif kind == "conversation_started":
                user = _user(data, "user")
                found.add(Event(id=_event_id(data), type=EventType.WELCOME, channel=self.channel,
                                contact=user, timestamp=_at(data),
                                params={"context": optional_text(data.get("context"), "context"),
                                        "subscribed": data.get("subscribed") is True}))
            elif kind == "message":
                found.add(Event(id=_event_id(data), type=EventType.MESSAGE_RECEIVED,
                                channel=self.channel, contact=_user(data, "sender"),
                                timestamp=_at(data), message=_message(data),
                                params={"tracking_data": _tracking(data)}))
            elif kind == "unsubscribed":
                user_id = identifier(data.get("user_id"), "user_id")
                found.add(Event(id=_event_id(data), type=EventType.CONTACT_UNSUBSCRIBED,
                                channel=self.channel, contact=ContactRef(external_id=user_id),
                                timestamp=_at(data), params={"reason": "unsubscribed"}))
            else:
                found.skip("event", "unsupported_item", kind[:100])
        return found.parsed()

    def outbound(self, recipient: str, content: Mapping[str, Any],
                 environ: Mapping[str, str]) -> Outbound | None:
        text = content["text"]
        token = environ.get("VIBER_AUTH_TOKEN")
        if not token:
            raise LookupError("VIBER_AUTH_TOKEN is not set")
        base = environ.get("VIBER_API_URL", "https://chatapi.viber.com/pa")
        return Outbound("POST", f"{base}/send_message",
                        {"Content-Type": "application/json", "X-Viber-Auth-Token": token},
                        {"receiver": recipient, "type": "text", "text": text,
                         "sender": {"name": environ.get("VIBER_SENDER_NAME", "Support")}},
                        classify=self.classify)

    def classify(self, answer: Answer) -> Verdict:
        """Viber answers 200 with ``status`` 0 on success, another status when it refuses."""
        if answer.status != 200:
            return http_verdict(answer)
        try:
            status = json.loads(answer.body or b"{}").get("status", 0)
        except (ValueError, AttributeError):
            return Verdict(AnswerKind.PERMANENT, message="Viber answered something that is not its JSON")
        return (Verdict(AnswerKind.SENT) if status == 0 else
                Verdict(AnswerKind.PERMANENT, str(status), f"Viber refused the message (status {status})"))


def _event_id(data: dict[str, Any]) -> str:
    return f"viber:{identifier(data.get('message_token'), 'message_token')}"


def _at(data: dict[str, Any]) -> datetime:
    return epoch_time(data.get("timestamp"), "timestamp", unit=1000)


def _user(data: dict[str, Any], key: str) -> ContactRef:
    user = mapping(data.get(key), key)
    return ContactRef(external_id=identifier(user.get("id"), f"{key}/id"),
                      name=display_name(user.get("name")))


def _tracking(data: dict[str, Any]) -> str | None:
    message = data.get("message")
    return optional_text(message.get("tracking_data"), "message/tracking_data", limit=4096) \
        if isinstance(message, dict) else None


def _message(data: dict[str, Any]) -> Message:
    message = mapping(data.get("message"), "message")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ItemError("message/type", "expected the message type")
    attachments = Attachments()
    if kind in MEDIA_TYPES:
        location = message.get("location") if isinstance(message.get("location"), dict) else {}
        contact = message.get("contact") if isinstance(message.get("contact"), dict) else {}
        attachments.add(MEDIA_TYPES[kind],
                        url=optional_text(message.get("media"), "message/media", limit=4000),
                        title=optional_text(message.get("file_name") or contact.get("name"),
                                            "message/file_name", limit=2000),
                        latitude=_coordinate(location.get("lat"), 90),
                        longitude=_coordinate(location.get("lon"), 180))
    return Message(text=optional_text(message.get("text"), "message/text") or "",
                   id=_event_id(data).removeprefix("viber:"),
                   attachments=attachments.as_tuple())


def _coordinate(value: Any, limit: float) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and -limit <= value <= limit:
        return value
    return None


ADAPTER = Viber()
