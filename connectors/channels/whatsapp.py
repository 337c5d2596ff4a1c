"""WhatsApp (Cloud API webhooks, messages endpoint): channel ``whatsapp``.

A body is ``{"object": "whatsapp_business_account", "entry": [{"changes": [{"field":
"messages", "value": {...}}]}]}``. In each value:

- ``messages[]`` -> ``message.received`` (one each, deduplicated on the ``wamid``): text;
  a caption with image / video / audio / document / sticker as ``message.attachments``;
  location and shared contacts as attachments; interactive button and list replies and
  template quick-reply buttons as ``message.postback`` (the title as text); every
  structured reply (button, list, a WhatsApp Flow's ``nfm_reply``, a call-permission
  reply) with its answers in ``params.answers`` and its kind in ``params.reply_type``;
  ``context`` as ``reply_to``; an ad click as ``params.referral``; a message type the Cloud
  API cannot show (``unsupported``) still counts as the contact writing, with an ``other``
  attachment;
- an ``edit`` -> ``message.received`` with ``message.edited`` true, the new text or
  caption, and ``message.id`` the edited message's id (``original_message_id``);
- a ``revoke`` (the contact deleted a message) -> ``message.deleted`` with
  ``params.message_id`` (id ``whatsapp:deleted:<wamid>``); a ``reaction`` ->
  ``message.reaction`` with ``params.emoji`` and ``params.message_id`` (a removed reaction,
  one without an emoji, is skipped); neither opens a conversation;
- a ``request_welcome`` message (the person opened the chat for the first time) ->
  ``welcome``;
- ``statuses[]`` of a message we sent: ``delivered`` -> ``message.delivered``, ``read`` ->
  ``message.read``, ``failed`` -> ``message.failed`` (id ``whatsapp:status:<wamid>:<status>``,
  the contact ``recipient_id``, ``params.platform_message_id`` the wamid, and on a failure
  ``params.error``: ``{kind, code, message}`` from ``errors[0]``, read with the same table
  as a send's answer); ``sent`` is skipped (the send's answer already said so), and so is
  any other status; a status never opens anything;
- ``errors[]`` are skipped with their reason;
- the ``smb_message_echoes`` field (a reply typed in the WhatsApp Business app, on a
  number that also uses the Cloud API): each of ``message_echoes[]`` -> ``message.sent`` to
  the contact (``to``, else ``to_user_id``) with ``actor`` ``business_app``, an agent's
  reply (an echoed ``edit`` with ``message.edited``), or for a ``revoke``
  ``message.deleted``. Every other field is skipped (``other_field``).

Sending: text (``{"text"}``), or a template message (``{"template": {"name", "language",
"parameters"}}``, the only kind WhatsApp carries outside the 24-hour customer service
window); the send API's answers are read by ``MetaWebhook.classify``.

The contact's identity is the phone-based ``wa_id`` (``from``); a person who hides the
number arrives with the business-scoped user id only (``from_user_id``, ``US.…``), which
is then the identity. The profile name comes from ``contacts[]``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from rules_engine import Event, EventType
from rules_engine.domain.model import ContactRef, Message

from ..decoding import decode_json
from ..errors import ApiError
from .base import (
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
    clipped,
    display_name,
    epoch_time,
    identifier,
    mapping,
    meta_code,
    meta_error_text,
    number,
    optional_text,
)

MEDIA = {"image": "image", "video": "video", "audio": "audio", "document": "file",
         "sticker": "sticker"}
STATUS_EVENTS = {"delivered": EventType.MESSAGE_DELIVERED, "read": EventType.MESSAGE_READ,
                 "failed": EventType.MESSAGE_FAILED}
ECHOES = "smb_message_echoes"
BUSINESS_APP = "business_app"  # the actor of a reply typed in the WhatsApp Business app

_T, _R, _P, _A = (AnswerKind.TRANSIENT, AnswerKind.RATE_LIMITED, AnswerKind.PERMANENT,
                  AnswerKind.AUTH)
# Cloud API error codes, by the action Meta recommends for each
# (https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes):
# "try again (later)" is transient; the "Throttling errors" and 131049 ("wait at least 24
# hours before resending") are rate limits; "get a new access token" and missing
# permissions are auth; a request, template, recipient or account to fix first is permanent.
ERROR_KINDS = {
    0: _A, 3: _A, 10: _A, 131005: _A,
    4: _R, 80007: _R, 130429: _R, 131048: _R, 131049: _R, 131056: _R, 132069: _R,
    131000: _T, 131016: _T, 131057: _T, 133004: _T,
    33: _P, 100: _P, 130472: _P, 130497: _P, 131008: _P, 131009: _P, 131021: _P, 131026: _P,
    131031: _P, 131037: _P, 131042: _P, 131045: _P, 131047: _P, 131050: _P, 131051: _P,
    131052: _P, 131053: _P, 132000: _P, 132001: _P, 132005: _P, 132007: _P, 132012: _P,
    132015: _P, 132016: _P, 132068: _P, 135000: _P,
}


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
    error_kinds = ERROR_KINDS
    # Free text only within 24 hours of the contact's latest message; templates at any time
    # (https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/send-messages#customer-service-windows).
    reply_window = timedelta(hours=24)
    pace = Pace(
        # "Business phone numbers can send 1 message every 6 seconds to the same WhatsApp
        # user" (pair rate limit, error 131056):
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/about-the-platform
        recipient_interval=6.0,
        # "up to 80 messages per second (mps) by default" per business phone number:
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput
        channel_interval=1 / 80,
    )

    def parse(self, body: bytes, headers: Headers, *, config: Mapping[str, Any],
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
                    if change.get("field") not in ("messages", ECHOES):
                        found.skip(path, "other_field", str(change.get("field"))[:100])
                        continue
                    value = mapping(change.get("value"), f"{path}/value")
                    if change["field"] == ECHOES:
                        _read_echoes(found, value, f"{path}/value")
                    else:
                        _read_value(found, value, f"{path}/value")
        return found.parsed()

    def outbound(self, recipient: str, content: Mapping[str, Any],
                 environ: Mapping[str, str]) -> Outbound | None:
        if content.get("tag") is not None:
            raise Unsendable("WhatsApp has no message tags: outside the 24-hour window, "
                             "send a template")
        if content.get("template") is not None:
            message = _template(content["template"])
        elif isinstance(content.get("text"), str):
            message = {"type": "text", "text": {"preview_url": False, "body": content["text"]}}
        else:
            raise Unsendable("nothing to send: the content has neither text nor a template")
        token, number = environ.get("WHATSAPP_ACCESS_TOKEN"), environ.get("WHATSAPP_PHONE_NUMBER_ID")
        if not token or not number:
            raise LookupError("WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID must be set")
        base = environ.get("WHATSAPP_GRAPH_URL", "https://graph.facebook.com/v21.0")
        to = {"recipient": recipient} if _is_user_id(recipient) else {"to": recipient}
        return Outbound("POST", f"{base}/{number}/messages",
                        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                        {"messaging_product": "whatsapp", "recipient_type": "individual", **to,
                         **message},
                        classify=self.classify)

    def sent_message_id(self, answer: Mapping[str, Any]) -> str | None:
        """The wamid: ``messages[0].id``."""
        messages = answer.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        return wamid if isinstance(wamid, str) and wamid else None


def _template(template: Any) -> dict[str, Any]:
    """A template message: ``{"name", "language", "parameters"}``, the body's parameters a
    list of strings (positional, ``{{1}}``...) or a mapping of name to string (a template
    created with named parameters, ``{{first_name}}``, sent with ``parameter_name``)."""
    if not isinstance(template, Mapping):
        raise Unsendable("a template is {name, language, parameters}")
    name, language = template.get("name"), template.get("language")
    if not isinstance(name, str) or not name or not isinstance(language, str) or not language:
        raise Unsendable("a template needs its name and its language code (e.g. en_US)")
    parameters = template.get("parameters") or []
    if isinstance(parameters, Mapping):
        body = [{"type": "text", "parameter_name": str(key), "text": str(value)}
                for key, value in parameters.items()]
    elif isinstance(parameters, list):
        body = [{"type": "text", "text": str(value)} for value in parameters]
    else:
        raise Unsendable("template parameters are a list of strings or a mapping of names")
    message: dict[str, Any] = {"name": name, "language": {"code": language}}
    if body:
        message["components"] = [{"type": "body", "parameters": body}]
    return {"type": "template", "template": message}


def _is_user_id(identity: str) -> bool:
    """Business-scoped user ids look like ``US.1349…``; phone-based ``wa_id`` are digits."""
    return not identity.isdigit()


def _read_value(found: Collector, value: dict[str, Any], path: str) -> None:
    names = _profile_names(value.get("contacts"))
    for m, message in enumerate(_list(value, "messages")):
        with found.item(f"{path}/messages/{m}"):
            _message(found, mapping(message, f"{path}/messages/{m}"), f"{path}/messages/{m}", names)
    for s, status in enumerate(_list(value, "statuses")):
        with found.item(f"{path}/statuses/{s}"):
            _status(found, mapping(status, f"{path}/statuses/{s}"), f"{path}/statuses/{s}")
    for n, error in enumerate(_list(value, "errors")):
        title = error.get("title") if isinstance(error, dict) else None
        found.skip(f"{path}/errors/{n}", "error", str(title)[:200])


def _read_echoes(found: Collector, value: dict[str, Any], path: str) -> None:
    """Replies typed in the WhatsApp Business app (``smb_message_echoes``)."""
    for n, echo in enumerate(_list(value, "message_echoes")):
        with found.item(f"{path}/message_echoes/{n}"):
            _echo(found, mapping(echo, f"{path}/message_echoes/{n}"), f"{path}/message_echoes/{n}")


def _echo(found: Collector, echo: dict[str, Any], path: str) -> None:
    """One reply from the Business app: ``message.sent`` (an agent's reply) to the person it
    was sent to, or ``message.deleted`` for a revoke; the business's own reaction is skipped."""
    kind = echo.get("type")
    if not isinstance(kind, str):
        raise ItemError(f"{path}/type", "expected the message type")
    if kind == "reaction":
        return found.skip(path, "reaction", "the business's own reaction")
    key = "to" if echo.get("to") is not None else "to_user_id"
    contact = ContactRef(external_id=identifier(echo.get(key), f"{path}/{key}"))
    wamid = identifier(echo.get("id"), f"{path}/id")
    at = epoch_time(echo.get("timestamp"), f"{path}/timestamp", unit=1)
    if kind == "revoke":
        return found.add(_about_a_message(echo, wamid, path, contact, at, actor=BUSINESS_APP))
    found.add(Event(id=f"whatsapp:{wamid}", type=EventType.MESSAGE_SENT, channel="whatsapp",
                    contact=contact, timestamp=at, actor=BUSINESS_APP,
                    message=_content_message(echo, wamid, path),
                    params={"message_type": kind[:40]}))


def _status(found: Collector, status: dict[str, Any], path: str) -> None:
    """One status of a message we sent: delivered, read or failed become events."""
    state = status.get("status")
    kind = STATUS_EVENTS.get(state) if isinstance(state, str) else None
    if kind is None:
        detail = ("sent: the send's answer already said the message was accepted"
                  if state == "sent" else f"{str(state)[:40]}: not delivered, read or failed")
        return found.skip(path, "status", detail)
    wamid = identifier(status.get("id"), f"{path}/id")
    if status.get("recipient_id") is not None:
        contact = identifier(status["recipient_id"], f"{path}/recipient_id")
    else:
        contact = identifier(status.get("recipient_user_id"), f"{path}/recipient_user_id")
    params: dict[str, Any] = {"platform_message_id": wamid}
    if kind is EventType.MESSAGE_FAILED:
        params["error"] = _status_error(status.get("errors"))
    found.add(Event(id=f"whatsapp:status:{wamid}:{state}", type=kind, channel="whatsapp",
                    contact=ContactRef(external_id=contact),
                    timestamp=epoch_time(status.get("timestamp"), f"{path}/timestamp", unit=1),
                    params=params))


def _status_error(errors: Any) -> dict[str, str]:
    """A failed status's ``errors[0]`` as ``{kind, code, message}``; a failure the platform
    does not explain, or a code no table knows, is permanent (nothing says to try again)."""
    error = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(error, dict):
        return {"kind": str(AnswerKind.PERMANENT), "code": "",
                "message": "the platform reported the failure without an error"}
    code = meta_code(error.get("code"))
    kind = WhatsApp.error_kind(code) if code is not None else None
    return {"kind": str(kind or AnswerKind.PERMANENT), "code": "" if code is None else str(code),
            "message": meta_error_text(error)}


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
    if kind in ("reaction", "revoke"):
        return found.add(_about_a_message(message, wamid, path, contact, at))
    params.update(_answers(message, path))
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


def _about_a_message(message: dict[str, Any], wamid: str, path: str, contact: ContactRef,
                     at: datetime, actor: str | None = None) -> Event:
    """A reaction (``message.reaction``) or a revoke (``message.deleted``): the message it is
    about in ``params.message_id``, the emoji in ``params.emoji``."""
    if message["type"] == "revoke":
        original = _content(message, "revoke").get("original_message_id")
        return Event(id=f"whatsapp:deleted:{wamid}", type=EventType.MESSAGE_DELETED,
                     channel="whatsapp", contact=contact, timestamp=at, actor=actor,
                     params={"message_id": optional_text(original, f"{path}/revoke", limit=200)})
    reaction = _content(message, "reaction")
    return Event(id=f"whatsapp:{wamid}", type=EventType.MESSAGE_REACTION, channel="whatsapp",
                 contact=contact, timestamp=at, params={
                     "emoji": optional_text(reaction.get("emoji"), f"{path}/reaction", limit=40),
                     "message_id": optional_text(reaction.get("message_id"),
                                                 f"{path}/reaction", limit=200)})


def _answers(message: dict[str, Any], path: str) -> dict[str, Any]:
    """A structured reply's answers, for conditions: ``params.reply_type`` (``button_reply``,
    ``list_reply``, ``nfm_reply``, ``call_permission_reply``, ``button``) and
    ``params.answers`` (a Flow's ``response_json``, decoded; else the reply's own fields)."""
    if message.get("type") == "button":
        button = _content(message, "button")
        return {"reply_type": "button",
                "answers": _scalars({"id": button.get("payload"), "title": button.get("text")})}
    interactive = _content(message, "interactive")
    reply_type = interactive.get("type")
    if message.get("type") != "interactive" or not isinstance(reply_type, str):
        return {}
    reply = _content(interactive, reply_type)
    answers = (_flow_answers(reply.get("response_json"), f"{path}/interactive/nfm_reply")
               if reply_type == "nfm_reply" else _scalars(reply))
    return {"reply_type": reply_type[:40], "answers": answers}


def _flow_answers(response_json: Any, path: str) -> dict[str, Any]:
    """The answers a WhatsApp Flow sent back: ``response_json``, a JSON object as text."""
    text = optional_text(response_json, f"{path}/response_json")
    try:
        answers = decode_json(text.encode()) if text else {}
    except ApiError as error:
        raise ItemError(f"{path}/response_json", f"not a JSON object: {error.message}") from None
    if not isinstance(answers, dict):
        raise ItemError(f"{path}/response_json", "not a JSON object")
    return answers


def _scalars(reply: Mapping[str, Any]) -> dict[str, Any]:
    """A reply object's plain fields (text, numbers, booleans)."""
    return {key: value for key, value in reply.items()
            if isinstance(value, (str, int, float, bool)) and len(str(value)) <= 2000}


def _content_message(message: dict[str, Any], wamid: str, path: str) -> Message:
    """The message a ``messages[]`` (or ``message_echoes[]``) item carries; an ``edit``
    carries the new content, as the edited message (its id, ``edited`` true)."""
    if message["type"] == "edit":
        edit = _content(message, "edit")
        new = _content(edit, "message")
        original = optional_text(edit.get("original_message_id"), f"{path}/edit", limit=200)
        if not isinstance(new.get("type"), str):
            raise ItemError(f"{path}/edit/message/type", "expected the new message's type")
        return replace(_content_message(new, original or wamid, f"{path}/edit/message"),
                       edited=True)
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
        cards = message.get("contacts")
        for card in cards if isinstance(cards, list) else ():
            card_name = _content(card, "name") if isinstance(card, dict) else {}
            attachments.add("contact", title=clipped(card_name.get("formatted_name"), 2000))
    elif kind == "interactive":
        interactive = _content(message, "interactive")
        reply = _content(interactive, "button_reply") or _content(interactive, "list_reply")
        text, postback = reply.get("title"), reply.get("id")
        text = text or _content(interactive, "nfm_reply").get("body")
    elif kind == "button":
        button = _content(message, "button")
        text, postback = button.get("text"), button.get("payload")
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
