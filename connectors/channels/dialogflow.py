"""Dialogflow ES and CX fulfillment webhooks: ``RB_MARKDONE`` and its companions, intents.

Requests are read with the real ``google-cloud-dialogflow`` / ``-cx`` types (imported on
the first request, so the rest of the app starts fast), after the one guarded JSON decoder;
protobuf values become plain Python once, here. Each request is one
``dialogflow.fulfillment`` event for the person talking to the agent, found in this order
in the request payload (``originalDetectIntentRequest.payload`` for ES, ``payload`` for CX):

1. ``contact_id``: the platform's contact id (the engine refuses one that names no contact),
   with ``channel`` as the event's channel (default ``dialogflow``);
2. ``channel`` + ``external_id``: a channel identity (e.g. ``facebook`` + a PSID);
3. ES, from one of Dialogflow's own integrations, named by ``source`` (top level, or inside
   the payload as older requests have it): the person's id on that channel, e.g. for
   ``facebook`` the PSID in ``payload.data.sender.id`` or the ``generic`` context's
   ``facebook_sender_id`` (see ``INTEGRATIONS``);
4. otherwise the session id (the last segment of the session path, without a
   ``:detectIntent`` method suffix) on channel ``dialogflow``.

The payload is what the detectIntent caller put in ``QueryParameters.payload`` (or what one
of Dialogflow's integrations puts there), so it is checked: ``contact_id`` must be an id and
``channel`` a channel events may carry (a registered adapter's, a built-in one, or one of
``INTEGRATIONS``'); otherwise the request is skipped with the reason, never applied to
someone else. After acting on the ``RB_*`` parameters the response clears them (null in the
returned ES output contexts; null in CX ``sessionInfo.parameters``), so a stale value cannot
close a conversation opened later; what was skipped or refused is in its
``payload.rules_engine.skipped``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from types import ModuleType
from typing import Any

from rules_engine import Event, EventType
from rules_engine.domain.channels import known_channels
from rules_engine.domain.errors import did_you_mean
from rules_engine.domain.inputs import ADD_TAGS, BOT_STATUS, MARKDONE, NOTIFY, REMOVE_TAGS
from rules_engine.domain.model import MAX_ID, ContactRef, Message

from ..auth import basic_credentials_match, require_bearer
from ..errors import ApiError
from .base import (
    MAX_ID_LENGTH,
    ChannelAdapter,
    Collector,
    Headers,
    ItemError,
    Parsed,
    Setting,
    Skipped,
    identifier,
    json_object,
)

ACTION_PARAMETERS = (MARKDONE, ADD_TAGS, REMOVE_TAGS, BOT_STATUS, NOTIFY)
# Dialogflow ES integrations: source -> (our channel, where the person's id is in the
# payload, the output-context parameter that repeats it).
INTEGRATIONS: dict[str, tuple[str, tuple[tuple[str, ...], ...], str | None]] = {
    "facebook": ("facebook", (("data", "sender", "id"),), "facebook_sender_id"),
    "telegram": ("telegram", (("data", "from", "id"), ("data", "message", "from", "id"),
                              ("data", "callback_query", "from", "id")), "telegram_chat_id"),
    "slack": ("slack", (("data", "user"), ("data", "event", "user")), "slack_user_id"),
    "slack_testbot": ("slack", (("data", "user"), ("data", "event", "user")), "slack_user_id"),
    "twitter": ("twitter", (("data", "direct_message", "sender_id_str"),), None),
    "viber": ("viber", (("data", "sender", "id"),), None),
    "line": ("line", (("data", "source", "userId"),), None),
    "google": ("google", (("user", "userId"),), None),
}
SETTINGS = (
    Setting("dialogflow_username", "DIALOGFLOW_WEBHOOK_USERNAME",
            "HTTP basic auth user name set in the agent's fulfillment settings"),
    Setting("dialogflow_password", "DIALOGFLOW_WEBHOOK_PASSWORD",
            "HTTP basic auth password set in the agent's fulfillment settings"),
    Setting("dialogflow_token", "DIALOGFLOW_WEBHOOK_TOKEN",
            "a bearer token (Authorization header) set in the agent's fulfillment settings"),
)


@cache
def _types(version: str) -> ModuleType:
    if version == "es":
        from google.cloud.dialogflow_v2 import types as es_types
        return es_types
    from google.cloud.dialogflowcx_v3 import types as cx_types
    return cx_types


def _plain(message: Any) -> Any:
    """A protobuf Struct/Value as plain Python; whole-number floats become ints."""
    from google.protobuf.json_format import MessageToDict

    return _whole_numbers(MessageToDict(message))


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value


@cache
def _fields(descriptor: Any) -> dict[str, Any]:
    """A message type's fields by their JSON and their proto names (ParseDict takes both)."""
    return {name: field for field in descriptor.fields for name in (field.json_name, field.name)}


def _empty_objects(value: Any, descriptor: Any) -> Any:
    """The JSON of a ``descriptor`` message, with ``[]`` read as ``{}`` where the type expects
    an object (a ``Struct`` or a map): some real requests send ``"parameters": []``. A list
    anywhere else (``queryResult.intent.parameters`` is one) or inside a Struct is kept."""
    if isinstance(value, list):  # a repeated message field
        return [_empty_objects(item, descriptor) for item in value]
    if not isinstance(value, dict):
        return value
    fields = _fields(descriptor)
    return {key: _field_json(item, fields[key].message_type if key in fields else None)
            for key, item in value.items()}


def _field_json(value: Any, message: Any) -> Any:
    """The JSON of one field whose type is ``message`` (None: a scalar, an enum, unknown)."""
    if message is None:
        return value
    if message.full_name == "google.protobuf.Struct" or message.GetOptions().map_entry:
        return {} if value == [] else value
    if message.full_name.startswith("google.protobuf."):  # Value, ListValue, Timestamp...
        return value
    return _empty_objects(value, message)


def _request(version: str, body: bytes, title: str) -> Any:
    """The body as the real ``WebhookRequest`` protobuf; 400 when it is not one."""
    from google.protobuf.json_format import ParseDict, ParseError

    message = _types(version).WebhookRequest.pb()()
    data = _empty_objects(json_object(body, title=title), message.DESCRIPTOR)
    try:
        return ParseDict(data, message, ignore_unknown_fields=True)
    except (ParseError, ValueError, TypeError, RecursionError) as error:
        raise ApiError(400, "invalid_payload", f"not a Dialogflow WebhookRequest: {error}"[:500],
                       hint=f"send the {title} format") from None


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _bounded_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None


@cache
def _payload_channels() -> frozenset[str]:
    """The channels a payload may name: those events may carry (the registry's and the
    built-in ones) and those Dialogflow's own integrations are read on."""
    return known_channels() | {channel for channel, _, _ in INTEGRATIONS.values()}


def _channel(value: Any, path: str) -> str:
    """The payload's ``channel``, when it is one of ``_payload_channels``; else an ItemError."""
    if isinstance(value, str) and value in _payload_channels():
        return value
    known = sorted(_payload_channels())
    raise ItemError(path, f"{str(value)[:40]!r} is not a channel events may carry: "
                    + (did_you_mean(str(value), known) or f"one of {', '.join(known)}"))


def _contact(payload: dict[str, Any], at: str, source: str | None,
             context_params: dict[str, Any], session_id: str) -> tuple[ContactRef, str]:
    """The person the request is about and their channel, in the module docstring's order;
    an ItemError when the payload (at ``at`` in the request) names one that cannot be used."""
    if "contact_id" in payload:
        contact_id = payload["contact_id"]
        if isinstance(contact_id, bool) or not isinstance(contact_id, int) \
                or not 0 < contact_id <= MAX_ID:
            raise ItemError(f"{at}/contact_id", f"{str(contact_id)[:40]!r} is not a contact's "
                            "id: the platform's contact id is a whole number from 1")
        return ContactRef(id=contact_id), _channel(payload.get("channel") or "dialogflow",
                                                   f"{at}/channel")
    if "channel" in payload and "external_id" in payload:
        return (ContactRef(external_id=identifier(payload["external_id"], f"{at}/external_id")),
                _channel(payload["channel"], f"{at}/channel"))
    if source in INTEGRATIONS:
        channel, paths, context_key = INTEGRATIONS[source]
        found = [_bounded_id(_dig(payload, path)) for path in paths]
        if context_key:
            found.append(_bounded_id(context_params.get(context_key)))
        person = next((value for value in found if value), None)
        if person:
            return ContactRef(external_id=person), channel
    return ContactRef(external_id=session_id), "dialogflow"


def _request_id(response_id: str, body: bytes) -> str:
    """Dialogflow's id of the request, or (test tools omit it) a digest of the body, so that a
    delivery repeated by the agent is still applied once."""
    if 0 < len(response_id) <= MAX_ID_LENGTH:
        return response_id
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _session_id(session: str) -> str:
    """The session's own id: the last path segment, without a ``:method`` suffix."""
    session_id = session.rstrip("/").rsplit("/", 1)[-1].split(":", 1)[0]
    if not session_id:
        raise ApiError(400, "invalid_payload", "the request has no session", path="session")
    return session_id[:MAX_ID_LENGTH]


def _check_credentials(headers: Headers, config: Mapping[str, Any], dev: bool) -> None:
    """HTTP basic credentials or a bearer token, whichever the agent is set up with."""
    username, password = config.get("dialogflow_username"), config.get("dialogflow_password")
    token = config.get("dialogflow_token")
    authorization = headers.get("Authorization")
    if username and password:
        if basic_credentials_match(authorization, username, password):
            return
        if not token:
            raise ApiError(401, "bad_credentials", "HTTP basic credentials do not match",
                           hint="set the same username and password in the agent's webhook")
    require_bearer(token, authorization, dev=dev,
                   env="DIALOGFLOW_WEBHOOK_USERNAME and DIALOGFLOW_WEBHOOK_PASSWORD, or "
                       "DIALOGFLOW_WEBHOOK_TOKEN")


class _Fulfillment(ChannelAdapter):
    """What ES and CX share: credentials, settings, the response with ``RB_*`` cleared."""

    version: str
    has_welcome = False
    settings = SETTINGS
    auth_schemes = {
        "dialogflowBasic": {"type": "http", "scheme": "basic",
                            "description": "DIALOGFLOW_WEBHOOK_USERNAME / DIALOGFLOW_WEBHOOK_PASSWORD"},
        "dialogflowToken": {"type": "http", "scheme": "bearer",
                            "description": "DIALOGFLOW_WEBHOOK_TOKEN"}}
    response_schema = {"type": "object", "description": "The agent's WebhookResponse: the "
                       "RB_* parameters acted on, set to null; what was skipped or refused in "
                       "payload.rules_engine.skipped"}

    def authenticate(self, body: bytes, headers: Headers, *,
                     config: Mapping[str, Any], dev: bool) -> None:
        _check_credentials(headers, config, dev)

    def check_settings(self, config: Mapping[str, Any]) -> list[str]:
        if bool(config.get("dialogflow_username")) != bool(config.get("dialogflow_password")):
            return ["set both DIALOGFLOW_WEBHOOK_USERNAME and DIALOGFLOW_WEBHOOK_PASSWORD"]
        return []

    def event(self, request_id: str, channel: str, contact: ContactRef, at: datetime, text: str,
              params: dict[str, Any], intent: str, display_name: str, confidence: float) -> Event:
        """The ``dialogflow.fulfillment`` event of one request."""
        return Event(id=f"{self.name}:{request_id}", type=EventType.DIALOGFLOW_FULFILLMENT,
                     channel=channel, contact=contact, timestamp=at, message=Message(text=text),
                     params=params, intent={"name": intent, "display_name": display_name,
                                            "confidence": confidence})

    def respond(self, parsed: Parsed, results: list[dict[str, Any]]) -> Any:
        """The WebhookResponse, after a round trip through the real type: the ``RB_*``
        parameters acted on set to null (none when the event was not applied), and what was
        skipped or refused in ``payload.rules_engine.skipped``, which Dialogflow hands to the
        detectIntent caller (ES ``queryResult.webhookPayload``, CX ``webhookPayloads``)."""
        from google.protobuf.json_format import MessageToDict, ParseDict

        reply = dict(parsed.reply) if results else {}
        if parsed.skipped:
            reply["payload"] = {"rules_engine": {"skipped": [item.to_dict()
                                                             for item in parsed.skipped]}}
        types = _types(self.version)
        return MessageToDict(ParseDict(reply, types.WebhookResponse.pb()()))


class DialogflowES(_Fulfillment):
    """Dialogflow ES (v2) fulfillment: one ``WebhookRequest`` is one
    ``dialogflow.fulfillment`` event (deduplicated on ``responseId``); ``RB_MARKDONE`` true
    closes the person's open conversation (close source ``dialogflow``), false opens one;
    ``RB_ADDTAGS`` / ``RB_REMOVETAGS`` / ``RB_BOTSTATUS`` / ``RB_NOTIFY`` are honoured. The
    person is found from the payload, Dialogflow's own integrations (``source`` at the top
    level or in the payload), or the session."""

    name = "dialogflow"
    channel = "dialogflow"
    title = "Dialogflow ES fulfillment"
    version = "es"

    def parse(self, body: bytes, headers: Headers, *, config: Mapping[str, Any],
              received_at: datetime) -> Parsed:
        pb = _request("es", body, self.title)
        query = pb.query_result
        params: dict[str, Any] = {}
        contexts = []
        for context in query.output_contexts:
            values = _plain(context.parameters)
            params.update(values)
            contexts.append((context, values))
        context_params = dict(params)
        params.update(_plain(query.parameters))
        original = pb.original_detect_intent_request
        payload = _plain(original.payload)
        source = original.source or (payload.get("source") if isinstance(payload.get("source"), str)
                                     else None)
        found = Collector()
        with found.item(""):
            contact, channel = _contact(payload, "originalDetectIntentRequest/payload", source,
                                        context_params, _session_id(pb.session))
            found.add(self.event(_request_id(pb.response_id, body), channel, contact,
                                 received_at, query.query_text, params, query.intent.name,
                                 query.intent.display_name, query.intent_detection_confidence))
        cleared = [
            {"name": context.name, "lifespanCount": context.lifespan_count,
             "parameters": {**values, **{name: None for name in ACTION_PARAMETERS if name in values}}}
            for context, values in contexts if any(name in values for name in ACTION_PARAMETERS)
        ]
        return found.parsed({"outputContexts": cleared} if cleared else {})


class DialogflowCX(_Fulfillment):
    """Dialogflow CX (v3) fulfillment: one ``WebhookRequest`` is one
    ``dialogflow.fulfillment`` event (deduplicated on ``detectIntentResponseId``), with the
    intent and session parameters; the person is the payload's contact or the session (a
    ``:detectIntent`` suffix names the same session)."""

    name = "dialogflow-cx"
    channel = "dialogflow"
    title = "Dialogflow CX fulfillment"
    version = "cx"

    def parse(self, body: bytes, headers: Headers, *, config: Mapping[str, Any],
              received_at: datetime) -> Parsed:
        pb = _request("cx", body, self.title)
        if not pb.session_info.session:  # e.g. a test request from the console: nobody to act on
            return Parsed((), (Skipped("sessionInfo/session", "no_session",
                                       "the request names no session"),), {})
        params = {name: _plain(value.resolved_value)
                  for name, value in pb.intent_info.parameters.items()}
        session_params = {name: _plain(value) for name, value in pb.session_info.parameters.items()}
        params.update(session_params)
        info = pb.intent_info
        found = Collector()
        with found.item(""):
            contact, channel = _contact(_plain(pb.payload), "payload", None, {},
                                        _session_id(pb.session_info.session))
            found.add(self.event(_request_id(pb.detect_intent_response_id, body), channel,
                                 contact, received_at, pb.text, params,
                                 info.last_matched_intent, info.display_name, info.confidence))
        cleared = {name: None for name in ACTION_PARAMETERS if name in session_params}
        return found.parsed({"sessionInfo": {"parameters": cleared}} if cleared else {})


ES = DialogflowES()
CX = DialogflowCX()
