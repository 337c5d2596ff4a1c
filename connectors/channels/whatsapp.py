"""WhatsApp (Cloud API webhooks, messages endpoint): channel ``whatsapp``.

A body is ``{"object": "whatsapp_business_account", "entry": [{"changes": [{"field":
"messages", "value": {...}}]}]}``. In each value:

- ``messages[]`` -> ``message.received`` (one each, deduplicated on the ``wamid``): text;
  a caption with image / video / audio / document / sticker as ``message.attachments``;
  location and shared contacts as attachments; interactive button and list replies and
  template quick-reply buttons as ``message.postback`` (the title as text); a reaction
  with ``params.reaction`` (the emoji) and ``reply_to`` the message it reacts to (a removed
  reaction is skipped); ``context`` as ``reply_to``; an ad
  click as ``params.referral``; a message type the Cloud API cannot show (``unsupported``)
  still counts as the contact writing, with an ``other`` attachment;
- a ``request_welcome`` message (the person opened the chat for the first time) ->
  ``welcome``;
- ``statuses[]`` (sent, delivered, read, failed) and ``errors[]`` are skipped with their
  reason; a status never opens anything.

The contact's identity is the phone-based ``wa_id`` (``from``); a person who hides the
number arrives with the business-scoped user id only (``from_user_id``, ``US.…``), which
is then the identity. The profile name comes from ``contacts[]``.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rules_engine import Event, EventType
from rules_engine.model import ContactRef, Message

from .base import (
    SEND,
    Attachments,
    Collector,
    ItemError,
    MetaWebhook,
    Outbound,
    Parsed,
    Setting,
    clipped,
    display_name,
    epoch_time,
    identifier,
    mapping,
    number,
    optional_text,
)

MEDIA = {"image": "image", "video": "video", "audio": "audio", "document": "file",
         "sticker": "sticker"}


class WhatsApp(MetaWebhook):
    name = "whatsapp"
    channel = "whatsapp"
    title = "WhatsApp Cloud API"
    has_welcome = True
    webhook_object = "whatsapp_business_account"
    app_secret = Setting("whatsapp_app_secret", "WHATSAPP_APP_SECRET",
                         "the Meta app secret: checks X-Hub-Signature-256 on every webhook")
    verify_token = Setting("whatsapp_verify_token", "WHATSAPP_VERIFY_TOKEN",
                           "the verify token typed in the app's webhook settings (GET handshake)")
    settings = (
        app_secret, verify_token,
        Setting("whatsapp_access_token", "WHATSAPP_ACCESS_TOKEN",
                "the access token the worker sends replies with", role=SEND),
        Setting("whatsapp_phone_number_id", "WHATSAPP_PHONE_NUMBER_ID",
                "the business phone number id replies are sent from", role=SEND),
    )

    def parse(self, body: bytes, headers: Mapping[str, str], *, config: Mapping[str, Any],
              received_at: datetime) -> Parsed:
        entries = self.entries(body)
        found = Collector()
        for e, entry in enumerate(entries):
            changes = entry.get("changes") if isinstance(entry, dict) else None
            if not isinstance(changes, list):
                found.skip(f"entry/{e}", "invalid_item", "expected changes[]")
                continue
            for c, change in enumerate(changes):
                path = f"entry/{e}/changes/{c}"
                with found.item(path):
                    change = mapping(change, path)
                    if change.get("field") != "messages":
                        found.skip(path, "other_field", str(change.get("field"))[:100])
                        continue
                    _read_value(found, mapping(change.get("value"), f"{path}/value"),
                                f"{path}/value")
        return found.parsed()

    def outbound(self, recipient: str, content: Mapping[str, Any],
                 environ: Mapping[str, str]) -> Outbound | None:
        text = content["text"]
        token, number = environ.get("WHATSAPP_ACCESS_TOKEN"), environ.get("WHATSAPP_PHONE_NUMBER_ID")
        if not token or not number:
            raise LookupError("WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID must be set")
        base = environ.get("WHATSAPP_GRAPH_URL", "https://graph.facebook.com/v21.0")
        to = {"recipient": recipient} if _is_user_id(recipient) else {"to": recipient}
        return Outbound("POST", f"{base}/{number}/messages",
                        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                        {"messaging_product": "whatsapp", "recipient_type": "individual", **to,
                         "type": "text", "text": {"preview_url": False, "body": text}})


def _is_user_id(identity: str) -> bool:
    """Business-scoped user ids look like ``US.1349…``; phone-based ``wa_id`` are digits."""
    return not identity.isdigit()


def _read_value(found: Collector, value: dict[str, Any], path: str) -> None:
    names = _profile_names(value.get("contacts"))
    for m, message in enumerate(_list(value, "messages")):
        with found.item(f"{path}/messages/{m}"):
            _message(found, mapping(message, f"{path}/messages/{m}"), f"{path}/messages/{m}", names)
    for s, status in enumerate(_list(value, "statuses")):
        state = status.get("status") if isinstance(status, dict) else None
        found.skip(f"{path}/statuses/{s}", "status", str(state)[:40])
    for n, error in enumerate(_list(value, "errors")):
        title = error.get("title") if isinstance(error, dict) else None
        found.skip(f"{path}/errors/{n}", "error", str(title)[:200])


def _list(value: dict[str, Any], key: str) -> list[Any]:
    items = value.get(key)
    return items if isinstance(items, list) else []


def _profile_names(contacts: Any) -> dict[str, str]:
    """Profile names by ``wa_id`` and by ``user_id``."""
    names: dict[str, str] = {}
    for contact in contacts if isinstance(contacts, list) else ():
        if not isinstance(contact, dict) or not isinstance(contact.get("profile"), dict):
            continue
        name = display_name(contact["profile"].get("name"))
        for key in ("wa_id", "user_id"):
            if name and isinstance(contact.get(key), str):
                names[contact[key]] = name
    return names


def _sender(message: dict[str, Any], path: str) -> str:
    if message.get("from") is not None:
        return identifier(message["from"], f"{path}/from")
    if message.get("from_user_id") is not None:
        return identifier(message["from_user_id"], f"{path}/from_user_id")
    raise ItemError(f"{path}/from", "expected from or from_user_id")


def _message(found: Collector, message: dict[str, Any], path: str, names: dict[str, str]) -> None:
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ItemError(f"{path}/type", "expected the message type")
    if kind == "system":
        return found.skip(path, "system", "a system notice, not the contact writing")
    if kind == "reaction" and not _content(message, "reaction").get("emoji"):
        return found.skip(path, "reaction_removed")
    sender = _sender(message, path)
    wamid = identifier(message.get("id"), f"{path}/id")
    at = epoch_time(message.get("timestamp"), f"{path}/timestamp", unit=1)
    contact = ContactRef(external_id=sender, name=names.get(sender))
    params: dict[str, Any] = {"message_type": str(kind)[:40]}
    if isinstance(message.get("referral"), dict):
        params["referral"] = _referral(message["referral"])
    if kind == "request_welcome":
        return found.add(Event(id=f"whatsapp:{wamid}", type=EventType.WELCOME, channel="whatsapp",
                               contact=contact, timestamp=at, params=params))
    if kind == "reaction":
        params["reaction"] = _content(message, "reaction").get("emoji")
    if isinstance(message.get("errors"), list):
        params["errors"] = [e.get("title") for e in message["errors"] if isinstance(e, dict)]
        for n, title in enumerate(params["errors"]):
            found.skip(f"{path}/errors/{n}", "error", str(title)[:200])
    found.add(Event(id=f"whatsapp:{wamid}", type=EventType.MESSAGE_RECEIVED, channel="whatsapp",
                    contact=contact, timestamp=at, message=_content_message(message, wamid, path),
                    params=params))


def _content(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    return value if isinstance(value, dict) else {}


def _content_message(message: dict[str, Any], wamid: str, path: str) -> Message:
    kind = message["type"]
    attachments = Attachments()
    text: Any = None
    postback: Any = None
    reply_to = _content(message, "context").get("id")
    if kind == "text":
        text = _content(message, "text").get("body")
    elif kind in MEDIA:
        media = _content(message, kind)
        text = media.get("caption")
        attachments.add(MEDIA[kind], url=clipped(media.get("url"), 4000),
                        mime_type=clipped(media.get("mime_type"), 200),
                        title=clipped(media.get("filename"), 2000))
    elif kind == "location":
        location = _content(message, "location")
        attachments.add("location", latitude=number(location.get("latitude")),
                        longitude=number(location.get("longitude")),
                        title=clipped(location.get("name") or location.get("address"), 2000))
    elif kind == "contacts":
        for card in message.get("contacts") if isinstance(message.get("contacts"), list) else ():
            card_name = _content(card, "name") if isinstance(card, dict) else {}
            attachments.add("contact", title=clipped(card_name.get("formatted_name"), 2000))
    elif kind == "interactive":
        interactive = _content(message, "interactive")
        reply = _content(interactive, "button_reply") or _content(interactive, "list_reply")
        text, postback = reply.get("title"), reply.get("id")
    elif kind == "button":
        button = _content(message, "button")
        text, postback = button.get("text"), button.get("payload")
    elif kind == "reaction":
        reply_to = _content(message, "reaction").get("message_id")
    elif kind == "order":
        text = _content(message, "order").get("text")
        attachments.add("other", title="order")
    else:  # unsupported, unknown or newer types: the contact still wrote
        attachments.add("other", title=clipped(kind, 40))
    return Message(text=optional_text(text, f"{path}/text") or "", id=wamid,
                   postback=optional_text(postback, f"{path}/postback", limit=2000),
                   reply_to=optional_text(reply_to, f"{path}/context/id", limit=200),
                   attachments=attachments.as_tuple())


def _referral(referral: dict[str, Any]) -> dict[str, Any]:
    """An ad click's documented fields (``source_type``, ``source_id``, ``source_url`` ...)."""
    keys = ("source_type", "source_id", "source_url", "headline", "body", "media_type", "ctwa_clid")
    return {key: referral[key] for key in keys if isinstance(referral.get(key), str)}


ADAPTER = WhatsApp()
