"""Facebook Messenger (Messenger Platform webhooks, Send API): channel ``facebook``.

Each ``entry[].messaging[]`` item is one thing that happened:

- ``message`` from the person -> ``message.received`` (text, quick reply payload,
  attachments, ``reply_to``); ``message.is_echo`` (the page's own message, sent by an agent
  or an app) -> ``message.sent`` for the person it was sent to, never an open;
- ``postback`` with a Get Started payload -> ``welcome``; any other postback ->
  ``message.received`` with ``message.postback`` (the button's title, if any, as text);
- ``referral`` (m.me link, ad, chat plugin) -> ``welcome`` with ``params.referral``;
- ``optin`` with ``notification_messages_status: STOP_NOTIFICATIONS`` ->
  ``contact.unsubscribed``;
- ``delivery`` (a message the page sent reached the person) -> ``message.delivered``, one
  per ``mids`` entry (id ``facebook:delivery:<mid>``, ``params.platform_message_id``), or,
  without ``mids``, one for the whole ``watermark`` (id
  ``facebook:delivery:<psid>:<watermark>``, ``params.watermark``: every message sent to
  that person before it); ``read`` -> ``message.read`` for its watermark (id
  ``facebook:read:<psid>:<watermark>``, ``params.watermark``); the contact is the person
  (``sender``), and a receipt never opens anything;
- ``reaction`` (``message_reactions``) ``react`` -> ``message.reaction`` with
  ``params.emoji``, ``params.reaction`` (``like``, ``love``...) and ``params.message_id``
  (the mid reacted to; the event's id is the person and the time, as it has none of its
  own); ``unreact`` is skipped;
- other opt-ins, thread handovers and unknown items are skipped with a reason; so are
  ``standby`` entries (another app owns the thread) and ``changes`` entries.

Sending: text, with an optional message ``tag`` (``messaging_type: MESSAGE_TAG``) for
messages outside the 24-hour standard messaging window; the Send API's answers are read by
``MetaWebhook.classify``.

People who use the chat plugin without logging in are known by ``sender.user_ref``; their
identity is ``user_ref:<ref>``, and replies go to ``recipient.user_ref``.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from rules_engine import Event, EventType
from rules_engine.domain.model import ContactRef, Message

from .base import (
    OPTION,
    SEND,
    AnswerKind,
    Attachments,
    Collector,
    Headers,
    ItemError,
    MetaWebhook,
    Outbound,
    Pace,
    Parsed,
    Setting,
    Unsendable,
    content_digest,
    epoch_time,
    identifier,
    iso_utc,
    mapping,
    number,
    optional_text,
)

USER_REF = "user_ref:"
# Messenger's attachment types -> the core's (``Message.attachments``).
ATTACHMENT_TYPES = {"image": "image", "video": "video", "audio": "audio", "file": "file",
                    "location": "location", "fallback": "link"}
SECONDS_DIGITS = 10  # 10 digits are seconds until the year 2286; milliseconds have 13
HANDOVERS = ("pass_thread_control", "take_thread_control", "request_thread_control",
             "app_roles")


# Send API error codes beyond the Graph API's
# (https://developers.facebook.com/documentation/business-messaging/messenger-platform/error-codes):
# 10 is the closed messaging window (subcodes 2018065, 2018278, 2534022; a pause would stop
# the people still inside theirs), 100 a bad parameter (no matching user, invalid tag), 551
# "This person isn't available right now", 1200 "Temporary send message failure. Please
# try again later." (https://developers.facebook.com/docs/messenger-platform/send-api-reference).
ERROR_KINDS = {10: AnswerKind.PERMANENT, 100: AnswerKind.PERMANENT, 551: AnswerKind.PERMANENT,
               1200: AnswerKind.TRANSIENT}
# The message tags that send outside the 24-hour standard messaging window, and how long
# after the person's latest message each may be used (None: any time); CUSTOMER_FEEDBACK
# needs a feedback template, not text
# (https://developers.facebook.com/documentation/business-messaging/messenger-platform/send-messages#message-tags).
TAG_WINDOWS: dict[str, timedelta | None] = {
    "HUMAN_AGENT": timedelta(days=7), "ACCOUNT_UPDATE": None, "CONFIRMED_EVENT_UPDATE": None,
    "POST_PURCHASE_UPDATE": None}


def _welcome_payloads(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


class Messenger(MetaWebhook):
    name = "facebook"
    channel = "facebook"
    title = "Messenger Platform"
    has_welcome = True
    webhook_object = "page"
    app_secret = Setting("facebook_app_secret", "FACEBOOK_APP_SECRET",
                         "the app secret: checks X-Hub-Signature-256 on every webhook")
    verify_token = Setting("facebook_verify_token", "FACEBOOK_VERIFY_TOKEN",
                           "the verify token typed in the app's webhook settings (GET handshake)")
    settings = (
        app_secret, verify_token,
        Setting("facebook_page_access_token", "FACEBOOK_PAGE_ACCESS_TOKEN",
                "the page access token the worker sends replies with", role=SEND),
        Setting("facebook_welcome_payloads", "FACEBOOK_WELCOME_PAYLOADS",
                "postback payloads that are a welcome (comma-separated, any case)", role=OPTION,
                default=("GET_STARTED", "GET_STARTED_PAYLOAD"), parse=_welcome_payloads),
    )
    error_kinds = ERROR_KINDS
    reply_window = timedelta(hours=24)
    tag_windows = TAG_WINDOWS
    # "300 calls per second per Facebook Page for messages that contain text"; for one
    # thread only "may be rate limited if too many messages are sent", with no figure:
    # https://developers.facebook.com/documentation/business-messaging/messenger-platform/overview/rate-limiting
    pace = Pace(channel_interval=1 / 300)

    def parse(self, body: bytes, headers: Headers, *, config: Mapping[str, Any],
              received_at: datetime) -> Parsed:
        entries = self.entries(body)
        found = Collector()
        welcome = tuple(p.upper() for p in config.get("facebook_welcome_payloads") or ())
        items = _Items(found, welcome, received_at)
        for e, entry in enumerate(entries):
            path = f"entry/{e}"
            if not isinstance(entry, dict):
                found.skip(path, "invalid_item", "expected an object")
                continue
            if isinstance(entry.get("messaging"), list):
                for m, item in enumerate(entry["messaging"]):
                    with found.item(f"{path}/messaging/{m}"):
                        items.read(mapping(item, f"{path}/messaging/{m}"), f"{path}/messaging/{m}")
            for key, reason in (("standby", "standby"), ("changes", "changes")):
                if isinstance(entry.get(key), list):
                    for n, _ in enumerate(entry[key]):
                        found.skip(f"{path}/{key}/{n}", reason,
                                   "another app owns this thread" if key == "standby"
                                   else "page feed changes are not messages")
            if not any(isinstance(entry.get(k), list) for k in ("messaging", "standby", "changes")):
                found.skip(path, "empty_entry", "no messaging, standby or changes")
        return found.parsed()

    def outbound(self, recipient: str, content: Mapping[str, Any],
                 environ: Mapping[str, str]) -> Outbound | None:
        if content.get("template") is not None:
            raise Unsendable("Messenger has no WhatsApp templates: send text, with a message "
                             "tag outside the 24-hour window")
        text, tag = content.get("text"), content.get("tag")
        if not isinstance(text, str):
            raise Unsendable("nothing to send: the content has no text")
        if tag is not None and tag not in TAG_WINDOWS:
            raise Unsendable(f"Messenger has no message tag {tag!r}: use one of "
                             f"{', '.join(TAG_WINDOWS)}")
        token = environ.get("FACEBOOK_PAGE_ACCESS_TOKEN")
        if not token:
            raise LookupError("FACEBOOK_PAGE_ACCESS_TOKEN is not set")
        base = environ.get("FACEBOOK_GRAPH_URL", "https://graph.facebook.com/v19.0")
        to = ({"user_ref": recipient[len(USER_REF):]} if recipient.startswith(USER_REF)
              else {"id": recipient})
        kind = {"messaging_type": "MESSAGE_TAG", "tag": tag} if tag else {"messaging_type": "RESPONSE"}
        return Outbound("POST", f"{base}/me/messages?access_token={token}",
                        {"Content-Type": "application/json"},
                        {"recipient": to, **kind, "message": {"text": text}},
                        classify=self.classify)

    def sent_message_id(self, answer: Mapping[str, Any]) -> str | None:
        """The Send API's ``message_id``."""
        mid = answer.get("message_id")
        return mid if isinstance(mid, str) and mid else None


class _Items:
    """Turns ``messaging`` items into events for one body."""

    def __init__(self, found: Collector, welcome_payloads: tuple[str, ...],
                 received_at: datetime) -> None:
        self.found = found
        self.welcome_payloads = welcome_payloads
        self.received_at = received_at

    def read(self, item: dict[str, Any], path: str) -> None:
        if "delivery" in item:
            return self.delivery(item, mapping(item["delivery"], f"{path}/delivery"), path)
        if "read" in item:
            return self.seen(item, mapping(item["read"], f"{path}/read"), path)
        for key in HANDOVERS:
            if key in item:
                return self.found.skip(path, "handover", key)
        message = item.get("message")
        if isinstance(message, dict) and message.get("is_echo"):
            return self.echo(item, message, path)
        if isinstance(message, dict):
            return self.message(item, message, path)
        if isinstance(item.get("postback"), dict):
            return self.postback(item, item["postback"], path)
        if isinstance(item.get("referral"), dict):
            return self.referral(item, item["referral"], path)
        if isinstance(item.get("reaction"), dict):
            return self.reaction(item, item["reaction"], path)
        if isinstance(item.get("optin"), dict):
            return self.optin(item, item["optin"], path)
        known = [key for key in item if key not in ("sender", "recipient", "timestamp")]
        self.found.skip(path, "unsupported_item", ", ".join(known) or "nothing in it")

    def at(self, item: dict[str, Any], path: str) -> datetime:
        """The item's time: milliseconds, as documented (seconds, as the App Dashboard's test
        notifications send them, are recognised); the time of receipt when absent."""
        if "timestamp" not in item:
            return self.received_at
        value = item["timestamp"]
        seconds = isinstance(value, (int, str)) and len(str(value)) <= SECONDS_DIGITS
        return epoch_time(value, f"{path}/timestamp", unit=1 if seconds else 1000)

    def person(self, item: dict[str, Any], path: str, key: str = "sender") -> str:
        party = mapping(item.get(key), f"{path}/{key}")
        if "id" in party:
            return identifier(party["id"], f"{path}/{key}/id")
        if "user_ref" in party:
            return USER_REF + identifier(party["user_ref"], f"{path}/{key}/user_ref")
        raise ItemError(f"{path}/{key}", "expected id or user_ref")

    def event(self, kind: EventType, event_id: str, person: str, at: datetime, *,
              message: Message | None = None, params: dict[str, Any] | None = None,
              actor: str | None = None) -> None:
        self.found.add(Event(id=f"facebook:{event_id}", type=kind, channel="facebook",
                             contact=ContactRef(external_id=person), timestamp=at,
                             message=message, params=params or {}, actor=actor))

    def receipt_at(self, item: dict[str, Any], path: str) -> datetime:
        """A receipt's time: its timestamp, or the time of receipt when it has none (the
        documented example) or 0 (as Messenger sent them in 2016)."""
        return self.received_at if item.get("timestamp") in (None, 0) else self.at(item, path)

    def delivery(self, item: dict[str, Any], delivery: dict[str, Any], path: str) -> None:
        person, at = self.person(item, path), self.receipt_at(item, path)
        mids = delivery.get("mids")
        if isinstance(mids, list) and mids:
            for n, mid in enumerate(mids):
                mid = identifier(mid, f"{path}/delivery/mids/{n}")
                self.event(EventType.MESSAGE_DELIVERED, f"delivery:{mid}", person, at,
                           params={"platform_message_id": mid})
            return
        watermark = delivery.get("watermark")
        self.event(EventType.MESSAGE_DELIVERED, f"delivery:{person}:{watermark}", person, at,
                   params={"watermark": self.watermark(watermark, f"{path}/delivery/watermark")})

    def seen(self, item: dict[str, Any], read: dict[str, Any], path: str) -> None:
        person, at = self.person(item, path), self.receipt_at(item, path)
        watermark = read.get("watermark")
        self.event(EventType.MESSAGE_READ, f"read:{person}:{watermark}", person, at,
                   params={"watermark": self.watermark(watermark, f"{path}/read/watermark")})

    @staticmethod
    def watermark(value: Any, path: str) -> str:
        """A receipt's watermark (milliseconds, as documented) as an ISO 8601 UTC string."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise ItemError(path, "expected the watermark in milliseconds")
        return iso_utc(epoch_time(value, path, unit=1000))

    def message(self, item: dict[str, Any], message: dict[str, Any], path: str) -> None:
        person, at = self.person(item, path), self.at(item, path)
        mid = identifier(message.get("mid"), f"{path}/message/mid")
        quick_reply = message.get("quick_reply")
        reply_to = message.get("reply_to")
        self.event(EventType.MESSAGE_RECEIVED, mid, person, at, message=Message(
            text=optional_text(message.get("text"), f"{path}/message/text") or "", id=mid,
            quick_reply=optional_text(quick_reply.get("payload"), f"{path}/message/quick_reply")
            if isinstance(quick_reply, dict) else None,
            attachments=_attachments(message.get("attachments"), f"{path}/message/attachments"),
            reply_to=optional_text(reply_to.get("mid"), f"{path}/message/reply_to")
            if isinstance(reply_to, dict) else None))

    def echo(self, item: dict[str, Any], message: dict[str, Any], path: str) -> None:
        person = self.person(item, path, key="recipient")
        mid = identifier(message.get("mid"), f"{path}/message/mid")
        app_id = message.get("app_id")
        self.event(EventType.MESSAGE_SENT, mid, person, self.at(item, path),
                   actor=f"app:{app_id}" if isinstance(app_id, (int, str)) else "page",
                   message=Message(
                       text=optional_text(message.get("text"), f"{path}/message/text") or "",
                       id=mid, attachments=_attachments(message.get("attachments"),
                                                        f"{path}/message/attachments")),
                   params={"metadata": message.get("metadata")} if "metadata" in message else {})

    def postback(self, item: dict[str, Any], postback: dict[str, Any], path: str) -> None:
        person, at = self.person(item, path), self.at(item, path)
        payload = optional_text(postback.get("payload"), f"{path}/postback/payload", limit=2000)
        title = optional_text(postback.get("title"), f"{path}/postback/title")
        mid = postback.get("mid")
        event_id = (identifier(mid, f"{path}/postback/mid") if mid is not None
                    else f"postback:{person}:{_moment(item, str(item.get('timestamp')))}")
        params: dict[str, Any] = {"payload": payload, "title": title}
        if isinstance(postback.get("referral"), dict):
            params["referral"] = _referral(postback["referral"])
        if payload is not None and payload.upper() in self.welcome_payloads:
            return self.event(EventType.WELCOME, event_id, person, at, params=params)
        self.event(EventType.MESSAGE_RECEIVED, event_id, person, at, params=params,
                   message=Message(text=title or "", id=mid if mid else None,
                                   postback=payload))

    def reaction(self, item: dict[str, Any], reaction: dict[str, Any], path: str) -> None:
        """``message_reactions``: ``react`` -> ``message.reaction`` (the emoji, and the mid
        of the message reacted to); ``unreact`` (taken back) is skipped."""
        if reaction.get("action") == "unreact":
            return self.found.skip(path, "reaction_removed", str(reaction.get("emoji"))[:40])
        person, at = self.person(item, path), self.at(item, path)
        self.event(EventType.MESSAGE_REACTION, f"reaction:{person}:{_moment(item, _ms(at))}",
                   person, at, params={
                       "emoji": optional_text(reaction.get("emoji"), f"{path}/reaction/emoji",
                                              limit=40),
                       "message_id": optional_text(reaction.get("mid"), f"{path}/reaction/mid",
                                                   limit=200),
                       "reaction": optional_text(reaction.get("reaction"),
                                                 f"{path}/reaction/reaction", limit=40)})

    def referral(self, item: dict[str, Any], referral: dict[str, Any], path: str) -> None:
        person, at = self.person(item, path), self.at(item, path)
        self.event(EventType.WELCOME, f"referral:{person}:{_moment(item, _ms(at))}",
                   person, at, params={"referral": _referral(referral)})

    def optin(self, item: dict[str, Any], optin: dict[str, Any], path: str) -> None:
        status = str(optin.get("notification_messages_status", "")).replace(" ", "_")
        if status != "STOP_NOTIFICATIONS":  # the docs spell it with a space, payloads with _
            return self.found.skip(path, "optin", str(optin.get("type") or "opt-in"))
        person, at = self.person(item, path), self.at(item, path)
        self.event(EventType.CONTACT_UNSUBSCRIBED, f"optout:{person}:{_moment(item, _ms(at))}",
                   person, at,
                   params={"reason": "stop_notifications", "topic": optin.get("title")})


def _moment(item: dict[str, Any], stamped: str) -> str:
    """What tells apart, for one person, items that carry no id of their own: ``stamped``
    (from the item's timestamp) when it has one, else a digest of the whole item, so that
    the same body delivered again gets the same event id (never the time it was received)."""
    return stamped if "timestamp" in item else content_digest(item)


def _ms(at: datetime) -> str:
    return str(int(at.timestamp() * 1000))


def _attachments(value: Any, path: str) -> tuple[dict[str, Any], ...]:
    found = Attachments()
    for n, attachment in enumerate(value if isinstance(value, list) else ()):
        attachment = mapping(attachment, f"{path}/{n}")
        payload = attachment.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        kind = ATTACHMENT_TYPES.get(str(attachment.get("type")), "other")
        if payload.get("sticker_id") is not None:
            kind = "sticker"
        coordinates = payload.get("coordinates")
        coordinates = coordinates if isinstance(coordinates, dict) else {}
        found.add(kind, url=optional_text(payload.get("url") or attachment.get("url"),
                                          f"{path}/{n}/payload/url", limit=4000),
                  title=optional_text(attachment.get("title") or payload.get("title"),
                                      f"{path}/{n}/title", limit=2000),
                  latitude=number(coordinates.get("lat")), longitude=number(coordinates.get("long")))
    return found.as_tuple()


def _referral(referral: dict[str, Any]) -> dict[str, Any]:
    """The documented fields of a referral: m.me ``ref``, ``source``, ``type``, ``ad_id``..."""
    keys = ("ref", "source", "type", "ad_id", "referer_uri", "is_guest_user")
    return {key: referral[key] for key in keys if isinstance(referral.get(key), (str, int, bool))}


ADAPTER = Messenger()
