"""The users' API (bearer token): open and close conversations by hand, merge contacts, run
rules by hand, set who is on which team and available, read."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, jsonify, request

from rules_engine import RulesEngineError, outbox, people, queries
from rules_engine.domain.model import MAX_ID
from rules_engine.formats.events import parse_event
from rules_engine.people import Role

from .access import access, principal
from .http import (
    ApiError,
    from_engine_error,
    json_body,
    run_events,
    whole_number_parameter,
)
from .services import engine

blueprint = Blueprint("api", __name__, url_prefix="/api")

_BODY_KEYS = {
    "open": {"user", "assignee", "team", "channel"},
    "close": {"user", "note"},
    "merge": {"user", "secondary_id"},
    "reply": {"user", "text"},
    "run": {"user", "contact_id", "params"},
}
_TEXT_KEYS = {"assignee", "team", "channel", "note", "text"}


def _command_body(kind: str) -> dict[str, Any]:
    """The command's body, checked; ``actor`` and ``via`` say who acts (see
    ``Principal.acting_as``: the token decides, ``user`` names whom an admin acts for)."""
    body = json_body() if request.content_length else {}
    unknown = set(body) - _BODY_KEYS[kind]
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s): {', '.join(sorted(unknown))}",
                       hint=f"allowed: {', '.join(sorted(_BODY_KEYS[kind]))}")
    user = body.pop("user", None)
    if user is not None and (not isinstance(user, str) or not user or len(user) > 200):
        raise ApiError(400, "invalid_body", "`user` must be a user's id (1 to 200 characters)",
                       path="user")
    for key in _BODY_KEYS[kind] & _TEXT_KEYS:
        if key in body and not isinstance(body[key], str):
            raise ApiError(400, "invalid_body", f"`{key}` must be a string", path=key)
    body["actor"], via = principal().acting_as(user)
    if via is not None:
        body["via"] = via
    return body


def _run_command(data: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Run a users' command as an event, recorded as ``body``'s actor (and ``via``);
    ``Idempotency-Key`` makes a retried request a no-op."""
    key = request.headers.get("Idempotency-Key")
    data = {"id": f"api:{key}" if key else f"api:{uuid.uuid4()}",
            "timestamp": datetime.now(timezone.utc).isoformat(), **data,
            **{name: body[name] for name in ("actor", "via") if name in body}}
    try:
        event = parse_event(data)
    except RulesEngineError as error:
        raise from_engine_error(error) from None
    return run_events([event])[0]


def _with_conversation(result: dict[str, Any], conversation_id: int | None) -> dict[str, Any]:
    if conversation_id is not None:
        result["conversation"] = queries.conversation(engine().store, conversation_id).to_dict()
    return result


@blueprint.post("/contacts/<id:contact_id>/conversations")
@access(Role.AGENT)
def open_conversation(contact_id: int) -> Any:
    """Open a conversation for the contact by hand (source ``user``); a no-op if one is open."""
    body = _command_body("open")
    params = {k: body[k] for k in ("assignee", "team", "channel") if k in body}
    result = _run_command({"type": "conversation.open", "contact": {"id": contact_id},
                           "params": params}, body)
    opened = any(c["operation"] == "open_conversation" for c in result["changes"])
    return jsonify(_with_conversation(result, result["conversation_id"])), 201 if opened else 200


@blueprint.post("/conversations/<id:conversation_id>/close")
@access(Role.AGENT)
def close_conversation(conversation_id: int) -> Any:
    """Close a conversation by hand (source ``user``), with an optional note."""
    body = _command_body("close")
    queries.conversation(engine().store, conversation_id)  # 404 before anything is recorded
    params = {"note": body["note"]} if "note" in body else {}
    result = _run_command({"type": "conversation.close", "conversation_id": conversation_id,
                           "params": params}, body)
    return jsonify(_with_conversation(result, conversation_id))


@blueprint.post("/conversations/<id:conversation_id>/replies")
@access(Role.AGENT)
def record_reply(conversation_id: int) -> Any:
    """Record a reply an agent sent elsewhere (``message.sent``): never opens, sends nothing."""
    body = _command_body("reply")
    if not isinstance(body.get("text"), str):
        raise ApiError(400, "invalid_body", "`text` (the reply) is required", path="text")
    conversation = queries.conversation(engine().store, conversation_id)  # 404 first
    data: dict[str, Any] = {"type": "message.sent", "contact": {"id": conversation.contact_id},
                            "message": {"text": body["text"]}}
    if conversation.channel:
        data["channel"] = conversation.channel
    return jsonify(_with_conversation(_run_command(data, body), conversation_id))


@blueprint.post("/contacts/<id:primary_id>/merge")
@access(Role.ADMIN)
def merge_contacts(primary_id: int) -> Any:
    """Merge ``secondary_id`` into this contact; the secondary's open conversation closes."""
    body = _command_body("merge")
    secondary = body.get("secondary_id")
    if not isinstance(secondary, int) or isinstance(secondary, bool) \
            or not 1 <= secondary <= MAX_ID:
        raise ApiError(400, "invalid_body", "`secondary_id` must be a contact id", path="secondary_id")
    result = _run_command({"type": "contacts.merge", "contact": {"id": primary_id},
                           "secondary_contact_id": secondary}, body)
    return jsonify(result)


@blueprint.post("/rules/<rule_id>/run")
@access(Role.AGENT)
def run_rule(rule_id: str) -> Any:
    """Run a rule whose trigger is ``manual`` on one contact, recorded as the caller (the
    trace names who ran it); ``params`` reach its conditions and actions."""
    body = _command_body("run")
    contact_id = body.get("contact_id")
    if not isinstance(contact_id, int) or isinstance(contact_id, bool) \
            or not 1 <= contact_id <= MAX_ID:
        raise ApiError(400, "invalid_body", "`contact_id` must be a contact id", path="contact_id")
    params = body.get("params", {})
    if not isinstance(params, dict) or "rule_id" in params:
        raise ApiError(400, "invalid_body", "`params` must be an object (without rule_id: the "
                       "path names the rule)", path="params")
    return jsonify(_run_command({"type": "manual", "contact": {"id": contact_id},
                                 "params": {**params, "rule_id": rule_id}}, body))


@blueprint.get("/contacts")
@access(Role.AGENT)
def find_contacts() -> Any:
    """Contacts by channel identity: ``?channel=facebook&external_id=<PSID>``."""
    channel, external_id = request.args.get("channel"), request.args.get("external_id")
    if not channel or not external_id:
        raise ApiError(400, "missing_parameter", "both `channel` and `external_id` are required")
    return jsonify(queries.find_contacts(engine().store, channel, external_id))


@blueprint.get("/contacts/<id:contact_id>/conversations")
@access(Role.AGENT)
def contact_conversations(contact_id: int) -> Any:
    """A contact's conversations, oldest first."""
    return jsonify(queries.contact_conversations(engine().store, contact_id))


@blueprint.get("/conversations/<id:conversation_id>")
@access(Role.AGENT)
def get_conversation(conversation_id: int) -> Any:
    """One conversation."""
    return jsonify(queries.conversation(engine().store, conversation_id).to_dict())


@blueprint.get("/conversations/<id:conversation_id>/notes")
@access(Role.AGENT)
def conversation_notes(conversation_id: int) -> Any:
    """The conversation's internal notes (the add_note action), newest first."""
    return jsonify(queries.notes(engine().store, conversation_id=conversation_id))


@blueprint.get("/events/<path:event_id>/trace")
@access(Role.AGENT)
def event_trace(event_id: str) -> Any:
    """Why an event did what it did: every candidate rule, condition and action."""
    return jsonify(queries.event_trace(engine().store, event_id))


@blueprint.get("/outbox")
@access(Role.ADMIN)
def outbox_rows() -> Any:
    """Outbound calls, newest first, secrets redacted:
    ``?status=pending|sent|delivered|read|failed|suppressed&channel=C&kind=K&limit=100``."""
    limit = whole_number_parameter("limit", default=100, least=1, most=1000)
    try:
        rows = outbox.list_outbound(engine().store, status=request.args.get("status"),
                                    channel=request.args.get("channel"),
                                    kind=request.args.get("kind"), limit=limit)
    except RulesEngineError as error:
        raise from_engine_error(error) from None
    return jsonify(rows)


@blueprint.post("/outbox/<id:outbox_id>/retry")
@access(Role.ADMIN)
def retry_outbound(outbox_id: int) -> Any:
    """Send a failed (or suppressed) call again."""
    outbox.requeue(engine().store, outbox_id)
    return jsonify({"id": outbox_id, "status": "pending"})


@blueprint.post("/outbox/retry")
@access(Role.ADMIN)
def retry_outbound_rows() -> Any:
    """Send every failed (or suppressed) call matching ``?status=failed|suppressed
    &channel=C&kind=K`` again; their ids."""
    try:
        ids = outbox.retry(engine().store, status=request.args.get("status", "failed"),
                           channel=request.args.get("channel"), kind=request.args.get("kind"))
    except RulesEngineError as error:
        raise from_engine_error(error) from None
    return jsonify({"ids": ids, "status": "pending"})


@blueprint.get("/outbox/pauses")
@access(Role.ADMIN)
def paused_channels() -> Any:
    """The channels whose send API refused our credential, with when and why."""
    return jsonify(outbox.pauses(engine().store))


@blueprint.post("/outbox/pauses/<channel>/resume")
@access(Role.ADMIN)
def resume_channel(channel: str) -> Any:
    """Call a paused channel again."""
    try:
        outbox.resume(engine().store, channel)
    except RulesEngineError as error:
        raise from_engine_error(error) from None
    return jsonify({"channel": channel, "paused": False})


@blueprint.get("/teams")
@access(Role.AGENT)
def list_teams() -> Any:
    """Every team with members: each member's availability, capacity and open conversations."""
    return jsonify({team: [member.to_dict() for member in members]
                    for team, members in people.teams(engine().store).items()})


@blueprint.patch("/users/<name>")
@access(Role.AGENT)
def set_presence(name: str) -> Any:
    """Set a user's ``availability`` (``available`` or ``away``; an agent sets their own)
    and ``max_open`` (their capacity, null for none; admins only)."""
    body = json_body()
    caller = principal()
    if caller.role is not Role.ADMIN:
        if name != caller.name:
            raise ApiError(403, "forbidden", f"'{caller.name}' sets only their own availability",
                           hint="an admin sets others' availability")
        if "max_open" in body:
            raise ApiError(403, "forbidden", "an agent sets their availability, not their "
                           "capacity", path="max_open", hint="an admin sets max_open")
    try:
        user = people.set_presence(engine().store, name, body)
    except people.PeopleError as error:
        raise ApiError(400, "invalid_body", error.message, path=error.path,
                       hint=error.hint) from None
    return jsonify(user.to_dict())


@blueprint.put("/teams/<team>/members/<name>")
@access(Role.ADMIN)
def join_team(team: str, name: str) -> Any:
    """Put a user on a team (201 when new, 200 when already on it)."""
    added = people.join_team(engine().store, team, [name])
    return jsonify({"team": team, "user": name, "member": True}), 201 if added else 200


@blueprint.delete("/teams/<team>/members/<name>")
@access(Role.ADMIN)
def leave_team(team: str, name: str) -> Any:
    """Take a user off a team (404 when they were not on it)."""
    if not people.leave_team(engine().store, team, [name]):
        raise ApiError(404, "not_found", f"'{name}' is not on team {team}",
                       hint="GET /api/teams lists the members")
    return jsonify({"team": team, "user": name, "member": False})
