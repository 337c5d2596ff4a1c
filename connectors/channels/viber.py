"""Viber (REST Bot API callbacks, ``send_message``): channel ``viber``.

One callback per request, signed with ``X-Viber-Content-Signature`` (hex HMAC-SHA256 of
the body keyed with the bot's auth token):

- ``conversation_started`` (the person opened a 1-on-1 chat with the bot) -> ``welcome``
  with ``params.context`` (the deep-link context) and ``params.subscribed``;
- ``message`` -> ``message.received``: text, and media (``picture``, ``video``, ``file``,
  ``sticker``, ``url``, ``contact``, ``location``) as ``message.attachments``;
- ``unsubscribed`` -> ``contact.unsubscribed`` (a callback without ``message_token`` is
  named by a digest of its body: see ``_event_id``);
- the status of a message the bot sent: ``delivered`` -> ``message.delivered``, ``seen`` ->
  ``message.read``, ``failed`` -> ``message.failed`` (Viber's ``desc`` as the error). The
  contact is the person messaged (``user_id``); ``params.platform_message_id`` is the
  ``message_token``; the id ``viber:<event>:<message_token>`` makes a repeat (one
  ``delivered`` per device) a duplicate;
- ``subscribed``, ``client_status`` and the ``webhook`` set-up check are skipped with their
  name as the reason.

Sending: ``send_message`` with free text. Viber answers HTTP 200 with a ``status`` (0: sent,
else the reason it refused), read by ``classify``.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rules_engine import Event, EventType
from rules_engine.domain.model import ContactRef, Message

from ..auth import require_signature
from .base import (
    OPTION,
    Answer,
    AnswerKind,
    Attachments,
    ChannelAdapter,
    Collector,
    Headers,
    ItemError,
    Outbound,
    Parsed,
    Setting,
    Verdict,
    answer_object,
    content_digest,
    display_name,
    epoch_time,
    http_verdict,
    identifier,
    json_object,
    mapping,
    not_this_format,
    one_line,
    optional_text,
    plain_text,
    platform_id,
)

SIGNATURE_HEADER = "X-Viber-Content-Signature"
ACKNOWLEDGED = frozenset({"subscribed", "webhook", "client_status"})
# What became of a message the bot sent.
STATUS_EVENTS = {"delivered": EventType.MESSAGE_DELIVERED, "seen": EventType.MESSAGE_READ,
                 "failed": EventType.MESSAGE_FAILED}
# send_message's ``status`` codes (https://creators.viber.com/docs/bots-api/errors); any
# other code is the documented "General Error", to "try again": transient.
REFUSED_TOKEN = frozenset({2, 8})  # invalidAuthToken, publicAccountNotFound ("check the token")
TOO_MANY_REQUESTS = 12
PERMANENT_STATUSES = frozenset(range(1, 25)) - REFUSED_TOKEN - {TOO_MANY_REQUESTS}
# Viber's message types -> the core's attachment types (``text`` has none).
MEDIA_TYPES = {"picture": "image", "video": "video", "file": "file", "sticker": "sticker",
               "url": "link", "contact": "contact", "location": "location"}


class Viber(ChannelAdapter):
    """Viber's REST Bot API.

    No ``pace``: Viber publishes no calls-per-second limit. Its one documented limit (100
    messages to a user within an hour without a reply, reset by the user's reply:
    https://creators.viber.com/docs/bots-api/resources/messaging/send-message) is a quota,
    not a pace, and is answered with status 12 (rate limited).

    No ``reply_window``: a bot may message a subscribed user at any time. Messages outside
    the 24-hour session that a user's message opens are billed or counted against a monthly
    free quota (``billing_status`` on the same page), never refused for the time; when the
    quota or the balance runs out, Viber answers status 23 or 24 (permanent).
    """

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

    def authenticate(self, body: bytes, headers: Headers, *,
                     config: Mapping[str, Any], dev: bool) -> None:
        require_signature(config.get("viber_auth_token"), body, headers.get(SIGNATURE_HEADER),
                          header=SIGNATURE_HEADER, env="VIBER_AUTH_TOKEN", dev=dev)

    def parse(self, body: bytes, headers: Headers, *, config: Mapping[str, Any],
              received_at: datetime) -> Parsed:
        data = json_object(body, title=self.title)
        kind = data.get("event")
        if not isinstance(kind, str):
            raise not_this_format("event", "expected the callback's event name", title=self.title)
        found = Collector()
        with found.item(""):
            if kind in ACKNOWLEDGED:
                found.skip("event", kind)
            elif kind in STATUS_EVENTS:
                found.add(_status_event(kind, data))
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
        text = plain_text(content, title=self.title)
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
        """What a ``send_message`` answer means. Viber answers HTTP 200 with ``status`` 0 and
        the ``message_token`` when it accepts, another ``status`` when it refuses: 12 rate
        limited, 2 and 8 a refused token, the other documented codes (1-24: not a Viber
        user, not subscribed, bad data...) permanent, an undocumented one transient.
        Any other HTTP status is read as such."""
        if not 200 <= answer.status < 300:
            return http_verdict(answer)
        data = answer_object(answer.body) or {}
        status = data.get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            # Viber always answers with a status: this came from something else, and
            # whether the message went out is unknown; failing it never sends it twice.
            return Verdict(AnswerKind.PERMANENT, str(answer.status),
                           "not a Viber answer: " + one_line(answer.body, 200))
        if status != 0:
            return _refusal(status, data.get("status_message"))
        failed = data.get("failed_list")
        if isinstance(failed, list) and failed:  # the receiver is refused (broadcast's shape)
            item = failed[0] if isinstance(failed[0], dict) else {}
            code = item.get("status")
            return _refusal(code if isinstance(code, int) and not isinstance(code, bool)
                            and code != 0 else None, item.get("status_message"))
        return Verdict(AnswerKind.SENT, platform_message_id=platform_id(data.get("message_token")))


def _refusal(status: int | None, status_message: Any) -> Verdict:
    """The verdict on a ``status`` other than 0 (None: a refusal that names no code)."""
    message = one_line(status_message) if isinstance(status_message, str) else ""
    code = None if status is None else str(status)
    if status == TOO_MANY_REQUESTS:
        return Verdict(AnswerKind.RATE_LIMITED, code, message)  # Viber names no wait
    if status in REFUSED_TOKEN:
        return Verdict(AnswerKind.AUTH, code, message)
    if status is None or status in PERMANENT_STATUSES:
        return Verdict(AnswerKind.PERMANENT, code, message)
    return Verdict(AnswerKind.TRANSIENT, code, message)


def _status_event(kind: str, data: dict[str, Any]) -> Event:
    """A ``delivered``, ``seen`` or ``failed`` callback as the event it stands for."""
    token = identifier(data.get("message_token"), "message_token")
    params: dict[str, Any] = {"platform_message_id": token}
    if kind == "failed":  # a reason that is not text does not hide the failure itself
        desc = data.get("desc")
        params["error"] = {"kind": AnswerKind.PERMANENT.value, "code": None,
                           "message": one_line(desc) if isinstance(desc, str) else ""}
    return Event(id=f"viber:{kind}:{token}", type=STATUS_EVENTS[kind], channel="viber",
                 contact=ContactRef(external_id=identifier(data.get("user_id"), "user_id")),
                 timestamp=_at(data), params=params)


def _event_id(data: dict[str, Any]) -> str:
    """``viber:<message_token>``; a callback sent without one (an ``unsubscribed`` as
    Viber's own Python SDK tests it) is named by its event and a digest of the whole body,
    so that the same callback delivered again is still a repeat."""
    if data.get("message_token") is None:
        return f"viber:{str(data.get('event'))[:40]}:{content_digest(data)}"
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
        location = message.get("location")
        location = location if isinstance(location, dict) else {}
        contact = message.get("contact")
        contact = contact if isinstance(contact, dict) else {}
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
