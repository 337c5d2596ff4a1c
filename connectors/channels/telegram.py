"""Telegram (Bot API webhook ``Update`` objects, ``sendMessage``): channel ``telegram``.

One ``Update`` per request, deduplicated on ``update_id``. The contact is the user who
acted (``from.id``):

- ``message`` -> ``message.received``: text, or a caption with a photo, video, document,
  audio, voice note or sticker, a location, venue or shared contact as
  ``message.attachments``, ``reply_to_message`` as ``reply_to``; ``params.chat`` says
  which chat (private or a group) it was written in;
- ``/start`` (with or without a deep-link parameter, ``params.start_parameter``) ->
  ``welcome``;
- ``edited_message`` -> ``message.received`` with ``message.edited`` true (``message.id``
  is the edited message's, which an edit keeps);
- ``callback_query`` (an inline button pressed) -> ``message.received`` with
  ``message.postback`` = the button's data;
- ``message_reaction`` (a user changed their reaction) -> ``message.reaction`` with
  ``params.emoji`` (the first of ``new_reaction``) and ``params.message_id``; a reaction
  taken back (no ``new_reaction``) and anonymous counts (``message_reaction_count``) are
  skipped;
- Telegram Business (a business account connected to the bot): ``business_message`` and
  ``edited_business_message`` are the customer's messages, as ``message`` and
  ``edited_message`` (no welcome: ``/start`` there is written to the business, not the
  bot), unless the business account or its bot wrote them (``from`` is not the chat's
  user): then ``message.sent`` (``actor`` ``business_account``, or ``bot:<username>`` for
  ``sender_business_bot``); ``deleted_business_messages`` -> ``message.deleted``, one per
  message id (id ``telegram:<update_id>:<message_id>``). The contact's identity there is
  ``business:<business_connection_id>:<chat id>``, so that replies go back through the
  connection; ``business_connection`` (the connection itself changing) is skipped;
- ``my_chat_member`` with the bot ``kicked`` in a private chat (the user blocked the bot)
  -> ``contact.unsubscribed``;
- channel posts, other member changes and every other kind of update are skipped with a
  reason.

Authenticity: the ``X-Telegram-Bot-Api-Secret-Token`` header must equal the
``secret_token`` given to ``setWebhook`` (``TELEGRAM_SECRET_TOKEN``).

Sending: ``sendMessage`` with free text (with ``business_connection_id`` to a business
chat's contact). Its answer (``{"ok", "result"}`` or ``{"ok": false,
"error_code", "description", "parameters"}``) is read by ``classify``. The Bot API sends no
delivery or read receipts to bots, so a Telegram row never goes past ``sent``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from rules_engine import Event, EventType
from rules_engine.domain.model import ContactRef, Message

from ..auth import require_header_token
from .base import (
    SEND,
    Answer,
    AnswerKind,
    Attachments,
    ChannelAdapter,
    Collector,
    Headers,
    ItemError,
    Outbound,
    Pace,
    Parsed,
    Setting,
    Verdict,
    answer_object,
    clipped,
    display_name,
    epoch_time,
    http_verdict,
    identifier,
    json_object,
    mapping,
    not_this_format,
    number,
    one_line,
    optional_text,
    plain_text,
    platform_id,
    retry_after_header,
)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MEDIA = {"photo": "image", "video": "video", "video_note": "video", "animation": "video",
         "document": "file", "audio": "audio", "voice": "audio", "sticker": "sticker"}
SKIPPED_UPDATES = ("channel_post", "edited_channel_post", "inline_query",
                   "chosen_inline_result", "shipping_query", "pre_checkout_query", "poll",
                   "poll_answer", "chat_member", "chat_join_request",
                   "message_reaction_count", "business_connection")
BUSINESS = "business:"  # a business chat's identity: business:<connection id>:<chat id>
# The wait in a description written before ``parameters`` existed: "Too Many Requests:
# retry after 3".
RETRY_AFTER_TEXT = re.compile(r"retry after (\d{1,7})\b")
LONGEST_WAIT = 7 * 86400.0  # seconds: a longer wait than this is not taken at its word
# The updates that carry a Message, and whether it is an edit.
MESSAGES = {"message": False, "edited_message": True, "business_message": False,
            "edited_business_message": True}


class Telegram(ChannelAdapter):
    """The Telegram Bot API. No ``reply_window``: a bot may write to a user who started it
    at any time, until the user blocks it (403, and a ``my_chat_member`` update)."""

    name = "telegram"
    channel = "telegram"
    title = "Telegram Bot API"
    has_welcome = True
    # https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this:
    # "In a single chat, avoid sending more than one message per second" (1 s a chat; a
    # group allows 20 a minute, which this one figure cannot say), and "the API will not
    # allow more than 30 messages per second or so" for a bot (1/30 s).
    pace = Pace(recipient_interval=1.0, channel_interval=1 / 30)
    auth_schemes = {"telegramSecretToken": {
        "type": "apiKey", "in": "header", "name": SECRET_HEADER,
        "description": "the secret_token given to setWebhook (TELEGRAM_SECRET_TOKEN)"}}
    settings = (
        Setting("telegram_secret_token", "TELEGRAM_SECRET_TOKEN",
                "the secret_token given to setWebhook: checks X-Telegram-Bot-Api-Secret-Token"),
        Setting("telegram_bot_token", "TELEGRAM_BOT_TOKEN",
                "the bot token the worker sends replies with", role=SEND),
    )

    def authenticate(self, body: bytes, headers: Headers, *,
                     config: Mapping[str, Any], dev: bool) -> None:
        require_header_token(config.get("telegram_secret_token"), headers.get(SECRET_HEADER),
                             header=SECRET_HEADER, env="TELEGRAM_SECRET_TOKEN", dev=dev)

    def parse(self, body: bytes, headers: Headers, *, config: Mapping[str, Any],
              received_at: datetime) -> Parsed:
        update = json_object(body, title=self.title)
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise not_this_format("update_id", "expected the update's number", title=self.title)
        found = Collector()
        event_id = f"telegram:{update_id}"
        with found.item(""):
            kind = next((k for k in MESSAGES if isinstance(update.get(k), dict)), None)
            if kind is not None:
                found.add(_message_event(event_id, update[kind], kind))
            elif isinstance(update.get("callback_query"), dict):
                found.add(_callback(event_id, update["callback_query"], received_at))
            elif isinstance(update.get("message_reaction"), dict):
                _reaction(found, event_id, update["message_reaction"])
            elif isinstance(update.get("deleted_business_messages"), dict):
                _deleted(found, event_id, update["deleted_business_messages"], received_at)
            elif isinstance(update.get("my_chat_member"), dict):
                _member_change(found, event_id, update["my_chat_member"])
            else:
                kind = next((k for k in update if k != "update_id"), "nothing")
                reason = "channel_post" if kind in ("channel_post", "edited_channel_post") else \
                    "unsupported_update" if kind not in SKIPPED_UPDATES else kind
                found.skip(str(kind)[:60], reason)
        return found.parsed()

    def outbound(self, recipient: str, content: Mapping[str, Any],
                 environ: Mapping[str, str]) -> Outbound | None:
        text = plain_text(content, title=self.title)
        token = environ.get("TELEGRAM_BOT_TOKEN")
        if not token:
            raise LookupError("TELEGRAM_BOT_TOKEN is not set")
        base = environ.get("TELEGRAM_API_URL", "https://api.telegram.org")
        return Outbound("POST", f"{base}/bot{token}/sendMessage",
                        {"Content-Type": "application/json"},
                        {**_addressed_to(recipient), "text": text}, classify=self.classify)

    def classify(self, answer: Answer) -> Verdict:
        """What a Bot API answer means. The server answers with the HTTP status equal to
        ``error_code``; the code read is ``error_code`` (the HTTP status when it has none):
        429 is rate limited (``parameters.retry_after``), 401 a refused token, 5xx
        transient, every other (400 chat not found, 403 blocked by the user, 409 a
        getUpdates conflict) permanent for this message."""
        data = answer_object(answer.body)
        if data is None or not isinstance(data.get("ok"), bool):
            if 200 <= answer.status < 300:  # the Bot API answers 200 only with {"ok": true}
                return Verdict(AnswerKind.PERMANENT, str(answer.status),
                               "not a Bot API answer: " + one_line(answer.body, 200))
            return http_verdict(answer)
        if data["ok"]:
            result = data.get("result")
            return Verdict(AnswerKind.SENT, platform_message_id=platform_id(
                result.get("message_id") if isinstance(result, dict) else None))
        error_code = data.get("error_code")
        status = error_code if isinstance(error_code, int) and not isinstance(error_code, bool) \
            and 400 <= error_code < 600 else answer.status
        description, parameters = data.get("description"), data.get("parameters")
        description = description if isinstance(description, str) else ""
        parameters = parameters if isinstance(parameters, dict) else {}
        code, message = str(status), one_line(description)
        if status == 429:
            return Verdict(AnswerKind.RATE_LIMITED, code, message, _seconds(
                parameters.get("retry_after"), answer.headers, description))
        if status == 401:
            return Verdict(AnswerKind.AUTH, code, message)
        if 500 <= status < 600:
            return Verdict(AnswerKind.TRANSIENT, code, message, retry_after_header(answer.headers))
        moved = parameters.get("migrate_to_chat_id")
        if isinstance(moved, int) and not isinstance(moved, bool):
            message = one_line(f"{description} (migrate_to_chat_id {moved})")
        return Verdict(AnswerKind.PERMANENT, code, message)


def _seconds(value: Any, headers: Headers, description: str) -> float | None:
    """How long a 429 asks to wait: ``parameters.retry_after``, else the ``Retry-After``
    header, else the number in the description (bodies from before ``parameters``)."""
    if number(value) is not None and math.isfinite(value) and value >= 0:
        return min(float(value), LONGEST_WAIT)
    header = retry_after_header(headers)
    if header is not None:
        return header
    found = RETRY_AFTER_TEXT.search(description)
    return min(float(found.group(1)), LONGEST_WAIT) if found else None


def _user(value: Any, path: str) -> ContactRef:
    user = mapping(value, path)
    return ContactRef(external_id=identifier(user.get("id"), f"{path}/id"),
                      name=display_name(user.get("first_name"), user.get("last_name")))


def _chat(message: dict[str, Any]) -> dict[str, Any]:
    chat = message.get("chat")
    chat = chat if isinstance(chat, dict) else {}
    return {"id": chat.get("id"), "type": chat.get("type")}


def _start_parameter(text: str) -> str | None:
    """The deep-link parameter when ``text`` is the /start command, else None ("" for none)."""
    command, _, rest = text.partition(" ")
    if command.split("@", 1)[0] != "/start":
        return None
    return rest.strip()


def _addressed_to(recipient: str) -> dict[str, Any]:
    """Where ``sendMessage`` goes: the chat, and for a business chat's contact
    (``business:<connection id>:<chat id>``) the business connection it goes through."""
    if recipient.startswith(BUSINESS):
        connection, _, chat = recipient.removeprefix(BUSINESS).rpartition(":")
        return {"business_connection_id": connection, **_addressed_to(chat)}
    return {"chat_id": int(recipient) if recipient.lstrip("-").isdigit() else recipient}


def _business_contact(connection: Any, chat: Any, path: str, name: str | None = None) -> ContactRef:
    """The contact of a business chat: ``business:<connection id>:<chat id>`` (the chat's id
    alone when the update names no connection)."""
    chat_id = identifier(chat.get("id") if isinstance(chat, dict) else None, f"{path}/chat/id")
    if connection is None:
        return ContactRef(external_id=chat_id, name=name)
    connection = identifier(connection, f"{path}/business_connection_id")
    return ContactRef(external_id=identifier(f"{BUSINESS}{connection}:{chat_id}", path), name=name)


def _message_event(event_id: str, message: dict[str, Any], path: str) -> Event:
    """A Message update: the contact's message (or /start, a welcome), or in a business
    chat the business's own reply (``message.sent``)."""
    if "from" not in message:
        raise ItemError(f"{path}/from", "a message without a sender (a channel's post)")
    edited, business = MESSAGES[path], path.endswith("business_message")
    contact = _user(message["from"], f"{path}/from")
    at = epoch_time(message.get("edit_date") if edited and "edit_date" in message
                    else message.get("date"), f"{path}/date", unit=1)
    text = optional_text(message.get("text"), f"{path}/text")
    params: dict[str, Any] = {"chat": _chat(message)}
    start = _start_parameter(text) if text and not edited and not business else None
    if start is not None:
        params["start_parameter"] = start or None
        return Event(id=event_id, type=EventType.WELCOME, channel="telegram", contact=contact,
                     timestamp=at, params=params)
    caption = optional_text(message.get("caption"), f"{path}/caption")
    reply = message.get("reply_to_message")
    message_id = message.get("message_id")
    content = Message(text=text or caption or "",
                      id=str(message_id) if isinstance(message_id, int) else None,
                      attachments=_attachments(message),
                      reply_to=str(reply.get("message_id")) if isinstance(reply, dict) else None,
                      edited=edited)
    if not business:
        return Event(id=event_id, type=EventType.MESSAGE_RECEIVED, channel="telegram",
                     contact=contact, timestamp=at, params=params, message=content)
    connection = message.get("business_connection_id")
    params["business_connection_id"] = connection
    customer = _business_contact(connection, message.get("chat"), path, contact.name)
    if str(params["chat"]["id"]) == contact.external_id:  # the chat's own user wrote it
        return Event(id=event_id, type=EventType.MESSAGE_RECEIVED, channel="telegram",
                     contact=customer, timestamp=at, params=params, message=content)
    bot = message.get("sender_business_bot")
    actor = (f"bot:{display_name(bot.get('username')) or bot.get('id')}"
             if isinstance(bot, dict) else "business_account")
    return Event(id=event_id, type=EventType.MESSAGE_SENT, channel="telegram",
                 contact=replace(customer, name=None), timestamp=at, params=params,
                 message=content, actor=actor)


def _reaction(found: Collector, event_id: str, change: dict[str, Any]) -> None:
    """A user's reaction to a message changed: the first emoji of ``new_reaction`` (a
    custom emoji by its id, a paid reaction as ``paid``); none left is a reaction taken
    back, and a reaction by an anonymous chat names nobody: both are skipped."""
    if not isinstance(change.get("user"), dict):
        return found.skip("message_reaction", "anonymous_reaction", "no user: a chat reacted")
    new = change.get("new_reaction")
    first = new[0] if isinstance(new, list) and new and isinstance(new[0], dict) else None
    if first is None:
        return found.skip("message_reaction", "reaction_removed")
    emoji = first.get("emoji") or first.get("custom_emoji_id") or first.get("type")
    message_id = change.get("message_id")
    found.add(Event(id=event_id, type=EventType.MESSAGE_REACTION, channel="telegram",
                    contact=_user(change["user"], "message_reaction/user"),
                    timestamp=epoch_time(change.get("date"), "message_reaction/date", unit=1),
                    params={"emoji": optional_text(emoji, "message_reaction/new_reaction",
                                                   limit=100),
                            "message_id": str(message_id) if isinstance(message_id, int) else None,
                            "chat": _chat(change)}))


def _deleted(found: Collector, event_id: str, deleted: dict[str, Any],
             received_at: datetime) -> None:
    """Messages deleted from a business chat: one ``message.deleted`` each (the update
    carries no time: it is the time of receipt)."""
    path = "deleted_business_messages"
    contact = _business_contact(deleted.get("business_connection_id"), deleted.get("chat"), path)
    ids = deleted.get("message_ids")
    for n, message_id in enumerate(ids if isinstance(ids, list) else ()):
        message_id = identifier(message_id, f"{path}/message_ids/{n}")
        found.add(Event(id=f"{event_id}:{message_id}", type=EventType.MESSAGE_DELETED,
                        channel="telegram", contact=contact, timestamp=received_at,
                        params={"message_id": message_id, "chat": _chat(deleted)}))


def _attachments(message: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    found = Attachments()
    for key, kind in MEDIA.items():
        media = message.get(key)
        if isinstance(media, list):  # a photo comes in several sizes: the largest is last
            media = media[-1] if media else None
        if isinstance(media, dict):
            found.add(kind, mime_type=clipped(media.get("mime_type"), 200),
                      title=clipped(media.get("file_name") or media.get("title")
                                  or media.get("emoji"), 2000))
    location = message.get("location")
    venue = message.get("venue")
    if isinstance(venue, dict) and isinstance(venue.get("location"), dict):
        location = venue["location"]
    if isinstance(location, dict):
        found.add("location", latitude=number(location.get("latitude")),
                  longitude=number(location.get("longitude")),
                  title=clipped(venue.get("title"), 2000) if isinstance(venue, dict) else None)
    contact = message.get("contact")
    if isinstance(contact, dict):
        found.add("contact", title=display_name(contact.get("first_name"), contact.get("last_name")))
    return found.as_tuple()


def _callback(event_id: str, query: dict[str, Any], received_at: datetime) -> Event:
    contact = _user(query.get("from"), "callback_query/from")
    data = optional_text(query.get("data"), "callback_query/data", limit=2000)
    message = query.get("message")
    message = message if isinstance(message, dict) else {}
    return Event(id=event_id, type=EventType.MESSAGE_RECEIVED, channel="telegram",
                 contact=contact, timestamp=received_at,
                 params={"chat": _chat(message), "callback_query_id": query.get("id")},
                 message=Message(text="", postback=data,
                                 reply_to=str(message["message_id"])
                                 if isinstance(message.get("message_id"), int) else None))


def _member_change(found: Collector, event_id: str, change: dict[str, Any]) -> None:
    chat = change.get("chat")
    chat = chat if isinstance(chat, dict) else {}
    new = change.get("new_chat_member")
    new = new if isinstance(new, dict) else {}
    status = new.get("status")
    if chat.get("type") != "private" or status != "kicked":
        return found.skip("my_chat_member", "member_change", f"{chat.get('type')}: {status}")
    found.add(Event(id=event_id, type=EventType.CONTACT_UNSUBSCRIBED, channel="telegram",
                    contact=_user(change.get("from"), "my_chat_member/from"),
                    timestamp=epoch_time(change.get("date"), "my_chat_member/date", unit=1),
                    params={"reason": "blocked_the_bot"}))


ADAPTER = Telegram()
