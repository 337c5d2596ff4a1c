"""Dialogflow ES and CX fulfillment webhooks: RB_MARKDONE and its companions, and intents.

Requests are parsed with the real ``google-cloud-dialogflow`` / ``google-cloud-dialogflow-cx``
types (imported on first use, so the rest of the app starts fast); protobuf values are turned
into plain Python once, here. The contact is found, in this order, from the request payload
(``originalDetectIntentRequest.payload`` for ES, ``payload`` for CX):

1. ``contact_id``: the platform's contact id;
2. ``channel`` + ``external_id``: a channel identity (e.g. ``facebook`` + a PSID);
3. ES only: ``source == "facebook"`` with ``payload.data.sender.id`` (the Messenger integration);
4. otherwise the session id (the last segment of the session path) on channel ``dialogflow``.

After acting on the ``RB_*`` parameters the response clears them (null in the returned ES
output contexts; null in CX ``sessionInfo.parameters``), so a stale value cannot close a
conversation opened later.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from types import ModuleType
from typing import Any

from flask import Blueprint, jsonify, request

from rules_engine import Event, EventType
from rules_engine.inputs import ADD_TAGS, BOT_STATUS, MARKDONE, NOTIFY, REMOVE_TAGS
from rules_engine.model import ContactRef, Message

from .auth import basic_credentials_match, require_bearer
from .http import ApiError, raw_body, require_json_content_type, run_events
from .http import settings as app_settings

CHANNEL = "dialogflow"
ACTION_PARAMETERS = (MARKDONE, ADD_TAGS, REMOVE_TAGS, BOT_STATUS, NOTIFY)

blueprint = Blueprint("dialogflow", __name__)


@cache
def _es() -> ModuleType:
    from google.cloud.dialogflow_v2 import types

    return types


@cache
def _cx() -> ModuleType:
    from google.cloud.dialogflowcx_v3 import types

    return types


def _plain(message: Any) -> Any:
    """A protobuf Struct/Value as plain Python; whole-number floats become ints."""
    from google.protobuf.json_format import MessageToDict

    return _whole_numbers(MessageToDict(message))


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value


def _parse(types_module: ModuleType, body: bytes) -> Any:
    from google.protobuf.json_format import ParseError

    try:
        return types_module.WebhookRequest.from_json(body.decode("utf-8"), ignore_unknown_fields=True)
    except (ParseError, UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, "invalid_payload", f"not a Dialogflow WebhookRequest: {error}") from None


def _contact(payload: dict[str, Any], session_id: str, source: str | None) -> tuple[ContactRef, str]:
    contact_id = payload.get("contact_id")
    if isinstance(contact_id, int) and contact_id > 0:
        return ContactRef(id=contact_id), str(payload.get("channel") or CHANNEL)
    if isinstance(payload.get("channel"), str) and isinstance(payload.get("external_id"), str):
        return ContactRef(external_id=payload["external_id"]), payload["channel"]
    sender = (payload.get("data") or {}).get("sender") if isinstance(payload.get("data"), dict) else None
    if source == "facebook" and isinstance(sender, dict) and isinstance(sender.get("id"), str):
        return ContactRef(external_id=sender["id"]), "facebook"
    return ContactRef(external_id=session_id), CHANNEL


def _session_id(session: str) -> str:
    session_id = session.rstrip("/").rsplit("/", 1)[-1]
    if not session_id:
        raise ApiError(400, "invalid_payload", "the request has no session", path="session")
    return session_id


@dataclass(frozen=True)
class _Fulfillment:
    event: Event
    response: dict[str, Any]


def _es_fulfillment(body: bytes, received_at: datetime) -> _Fulfillment:
    types = _es()
    parsed = _parse(types, body)
    pb = types.WebhookRequest.pb(parsed)
    if not pb.response_id:
        raise ApiError(400, "invalid_payload", "responseId is required", path="responseId")
    query = pb.query_result
    params: dict[str, Any] = {}
    contexts = []
    for context in query.output_contexts:
        values = _plain(context.parameters)
        params.update(values)
        contexts.append((context, values))
    params.update(_plain(query.parameters))
    payload = _plain(pb.original_detect_intent_request.payload)
    contact, channel = _contact(payload, _session_id(pb.session),
                                pb.original_detect_intent_request.source or None)
    event = Event(
        id=f"dialogflow:{pb.response_id}", type=EventType.DIALOGFLOW_FULFILLMENT, channel=channel,
        contact=contact, timestamp=received_at, message=Message(text=query.query_text),
        params=params, intent={"name": query.intent.name, "display_name": query.intent.display_name,
                               "confidence": query.intent_detection_confidence},
    )
    cleared = [
        {"name": context.name, "lifespanCount": context.lifespan_count,
         "parameters": {**values, **{name: None for name in ACTION_PARAMETERS if name in values}}}
        for context, values in contexts if any(name in values for name in ACTION_PARAMETERS)
    ]
    response = {"outputContexts": cleared} if cleared else {}
    return _Fulfillment(event, _validated(types, response))


def _cx_fulfillment(body: bytes, received_at: datetime) -> _Fulfillment:
    types = _cx()
    parsed = _parse(types, body)
    pb = types.WebhookRequest.pb(parsed)
    if not pb.detect_intent_response_id:
        raise ApiError(400, "invalid_payload", "detectIntentResponseId is required",
                       path="detectIntentResponseId")
    params = {name: _plain(value.resolved_value) for name, value in pb.intent_info.parameters.items()}
    session_params = {name: _plain(value) for name, value in pb.session_info.parameters.items()}
    params.update(session_params)
    contact, channel = _contact(_plain(pb.payload), _session_id(pb.session_info.session), None)
    event = Event(
        id=f"dialogflow-cx:{pb.detect_intent_response_id}", type=EventType.DIALOGFLOW_FULFILLMENT,
        channel=channel, contact=contact, timestamp=received_at, message=Message(text=pb.text),
        params=params, intent={"name": pb.intent_info.last_matched_intent,
                               "display_name": pb.intent_info.display_name,
                               "confidence": pb.intent_info.confidence},
    )
    cleared = {name: None for name in ACTION_PARAMETERS if name in session_params}
    response = {"sessionInfo": {"parameters": cleared}} if cleared else {}
    return _Fulfillment(event, _validated(types, response))


def _validated(types_module: ModuleType, response: dict[str, Any]) -> dict[str, Any]:
    """The response as JSON, after a round trip through the real WebhookResponse type."""
    from google.protobuf.json_format import MessageToDict

    message = types_module.WebhookResponse.from_json(json.dumps(response))
    return MessageToDict(types_module.WebhookResponse.pb(message))


def _authenticate() -> None:
    settings = app_settings()
    authorization = request.headers.get("Authorization")
    if settings.dialogflow_username and settings.dialogflow_password:
        if basic_credentials_match(authorization, settings.dialogflow_username,
                                   settings.dialogflow_password):
            return
        if not settings.dialogflow_token:
            raise ApiError(401, "bad_credentials", "HTTP basic credentials do not match",
                           hint="set the same username and password in the agent's webhook")
    require_bearer(settings.dialogflow_token, authorization, dev=settings.dev)


def _fulfil(build: Any) -> Any:
    _authenticate()
    require_json_content_type()  # the protocol parser itself refuses malformed JSON (400)
    fulfillment = build(raw_body(), datetime.now(timezone.utc))
    results = run_events([fulfillment.event])
    return jsonify(fulfillment.response), 200, {"X-Rules-Engine-Status": results[0]["status"]}


@blueprint.post("/webhooks/dialogflow")
def fulfil_es() -> Any:
    """Dialogflow ES (v2) fulfillment."""
    return _fulfil(_es_fulfillment)


@blueprint.post("/webhooks/dialogflow-cx")
def fulfil_cx() -> Any:
    """Dialogflow CX (v3) fulfillment."""
    return _fulfil(_cx_fulfillment)
