"""The event context that conditions read: which names each event type provides."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from rules_engine.domain.model import (
    AnyEventType,
    CloseSource,
    Conversation,
    CustomEventType,
    EventType,
    Message,
    OpenSource,
)
from rules_engine.language.types import (
    ANY,
    BOOL,
    LIST,
    NULLABLE_TEXT,
    NULLABLE_TIME,
    NUMBER,
    TEXT,
    TIME,
    Kind,
    Type,
    of,
)

if TYPE_CHECKING:
    from rules_engine.domain.lifecycle import Lifecycle


@dataclass(frozen=True, slots=True)
class Free:
    """A free-form mapping (parameters, custom fields): any field name may be read, and its
    values may be of any kind; ``note`` says what a source's values really are."""

    note: str | None = None

    def field(self) -> Type:
        return Type(ANY.kinds, note=self.note)


FREE = Free()
# Dialogflow's parameters arrive as the agent's values, booleans as text ("true").
DIALOGFLOW_PARAMS = Free(note="Dialogflow sends parameter values such as RB_MARKDONE as "
                              "text ('true') unless the agent types them as booleans")
Spec: TypeAlias = Type | Free | Mapping[str, "Spec"]

EVENT_TYPES = frozenset(str(event) for event in EventType)
_EVENT_FIELDS: dict[str, Spec] = {"id": TEXT, "type": of(Kind.TEXT, values=EVENT_TYPES),
                                  "channel": NULLABLE_TEXT, "timestamp": TIME, "depth": NUMBER}
EVENT: Spec = _EVENT_FIELDS
CONTACT: Spec = {
    "id": NUMBER,
    "name": NULLABLE_TEXT,
    "tags": LIST,
    "fields": FREE,
    "identities": LIST,
    "created_at": TIME,
    "is_new": BOOL,
}
_OPEN_SOURCES = [str(source) for source in OpenSource]
_CLOSE_SOURCES = [str(source) for source in CloseSource]
CONVERSATION: Spec = {
    "id": of(Kind.NUMBER, Kind.NULL),
    "is_open": BOOL,
    "status": of(Kind.TEXT, values=["open", "closed", "none"]),
    "channel": NULLABLE_TEXT,
    "open_source": of(Kind.TEXT, Kind.NULL, values=_OPEN_SOURCES),
    "close_source": of(Kind.TEXT, Kind.NULL, values=_CLOSE_SOURCES),
    "opened_at": NULLABLE_TIME,
    "closed_at": NULLABLE_TIME,
    "opened_by": NULLABLE_TEXT,
    "closed_by": NULLABLE_TEXT,
    "assignee": NULLABLE_TEXT,
    "team": NULLABLE_TEXT,
    "bot_active": of(Kind.BOOL, Kind.NULL),
    "first_response_at": NULLABLE_TIME,
    "last_reply_at": NULLABLE_TIME,
}
MESSAGE: Spec = {"id": NULLABLE_TEXT, "text": TEXT, "quick_reply": NULLABLE_TEXT,
                 "postback": NULLABLE_TEXT, "attachments": LIST, "reply_to": NULLABLE_TEXT,
                 "edited": BOOL}
INTENT: Spec = {"name": NULLABLE_TEXT, "display_name": NULLABLE_TEXT,
                "confidence": of(Kind.NUMBER, Kind.NULL)}

_COMMON: dict[str, Spec] = {
    "event": EVENT,
    "contact": CONTACT,
    "conversation": CONVERSATION,
    "channel": NULLABLE_TEXT,
    "params": FREE,
}

# The roots each trigger's conditions may read. Facts carry their details in ``params``
# (e.g. ``params.tag`` for contact.tag_added, ``params.secondary_contact_id`` for a merge).
ROOTS_BY_EVENT: dict[EventType, dict[str, Spec]] = {
    EventType.MESSAGE_RECEIVED: {**_COMMON, "message": MESSAGE},
    EventType.MESSAGE_SENT: {**_COMMON, "message": MESSAGE, "actor": NULLABLE_TEXT},
    EventType.MANUAL: {**_COMMON, "actor": NULLABLE_TEXT},  # actor: who ran the rule
    EventType.DIALOGFLOW_FULFILLMENT: {**_COMMON, "message": MESSAGE, "intent": INTENT,
                                       "params": DIALOGFLOW_PARAMS},
    # params.for and params.of: the idle rule's own trigger
}


def every_root() -> dict[str, Spec]:
    """Every name any trigger provides: to check a rule whose trigger is itself invalid."""
    merged: dict[str, Spec] = dict(_COMMON)
    for roots in ROOTS_BY_EVENT.values():
        merged.update(roots)
    return merged


def field_type(roots: Mapping[str, Spec], chain: list[str]) -> Type:
    """The type of the field ``chain`` names (already known to exist): a whole object is an
    object; anything under a free-form mapping may be of any kind."""
    spec: Spec = roots[chain[0]]
    for part in chain[1:]:
        if isinstance(spec, Free):
            return spec.field()
        if isinstance(spec, Type):
            break
        spec = spec[part]
    if isinstance(spec, Free):
        return Type(frozenset({Kind.MAP}), note=spec.note)
    return spec if isinstance(spec, Type) else of(Kind.MAP)


def roots_for(event_type: AnyEventType,
              params_schema: Mapping[str, Any] | None = None) -> dict[str, Spec]:
    """The names a condition on ``event_type`` may use, with the fields of each; a custom
    event's ``params`` are typed by its declared JSON Schema (``params_schema``), if any."""
    if isinstance(event_type, CustomEventType):
        params = FREE if params_schema is None else params_spec(params_schema)
        return {**_COMMON, "event": {**_EVENT_FIELDS, "type": of(Kind.TEXT, values=[event_type])},
                "params": params}
    return ROOTS_BY_EVENT.get(event_type, _COMMON)


_JSON_KINDS = {"string": (Kind.TEXT,), "number": (Kind.NUMBER,), "integer": (Kind.NUMBER,),
               "boolean": (Kind.BOOL,), "null": (Kind.NULL,), "array": (Kind.LIST,),
               "object": (Kind.MAP,)}


def params_spec(schema: Mapping[str, Any]) -> Spec:
    """The params a custom event's declared JSON Schema describes, as conditions type them:
    an object with ``properties`` has exactly those fields (others are unknown names; one
    the event leaves out reads as null, see ``RuleSet.condition_params``); any other
    schema leaves the params free-form."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or schema.get("type", "object") != "object":
        return FREE
    needed = set(schema.get("required") or ())
    return {name: _field_spec(part if isinstance(part, Mapping) else {}, required=name in needed)
            for name, part in properties.items()}


def _field_spec(schema: Mapping[str, Any], *, required: bool) -> Spec:
    """One declared param: of the kinds its ``type`` allows (any kind with none), null too
    when it is not required; an object's own fields are free-form."""
    written = schema.get("type")
    names = [written] if isinstance(written, str) else list(written or [])
    if names == ["object"]:
        return FREE
    kinds = [kind for name in names for kind in _JSON_KINDS.get(name, ())] or list(Kind)
    if not required:
        kinds.append(Kind.NULL)
    enum = schema.get("enum")
    values = [v for v in enum if isinstance(v, str)] if isinstance(enum, list) else None
    return of(*kinds, values=values if values and Kind.TEXT in kinds else None)


_NO_CONVERSATION: dict[str, Any] = {
    "id": None, "is_open": False, "status": "none", "channel": None, "open_source": None,
    "close_source": None, "opened_at": None, "closed_at": None, "opened_by": None,
    "closed_by": None, "assignee": None, "team": None, "bot_active": None,
    "first_response_at": None, "last_reply_at": None,
}


def conversation_view(conversation: Conversation | None) -> dict[str, Any]:
    """A conversation as conditions see it (``status`` is ``none`` when there is none)."""
    if conversation is None:
        return dict(_NO_CONVERSATION)
    view = conversation.to_dict()
    view["is_open"] = conversation.is_open
    return {key: view[key] for key in _NO_CONVERSATION}


def build_context(
    lifecycle: Lifecycle,
    *,
    event_id: str,
    event_type: AnyEventType,
    channel: str | None,
    timestamp: datetime,
    depth: int,
    contact_id: int,
    contact_is_new: bool,
    conversation_id: int | None,
    params: Mapping[str, Any],
    message: Message | None = None,
    intent: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """The values a condition reads for one event, from the contact's aggregate (which
    holds this event's own changes so far)."""
    state = lifecycle.state(contact_id)
    conversation = (lifecycle.conversation(conversation_id) if conversation_id is not None
                    else state.open_conversation)
    contact = state.contact
    context: dict[str, Any] = {
        "event": {"id": event_id, "type": str(event_type), "channel": channel,
                  "timestamp": timestamp.isoformat(), "depth": depth},
        "contact": {
            "id": contact.id, "name": contact.name, "tags": list(state.tags),
            "fields": dict(state.fields), "identities": [dict(i) for i in state.identities],
            "created_at": contact.created_at.isoformat(), "is_new": contact_is_new,
        },
        "conversation": conversation_view(conversation),
        "channel": channel,
        "params": dict(params),
    }
    if message is not None:
        context["message"] = message.to_dict()
    if event_type is EventType.MESSAGE_SENT or event_type is EventType.MANUAL:
        context["actor"] = actor
    if event_type is EventType.DIALOGFLOW_FULFILLMENT:
        context["intent"] = {"name": None, "display_name": None, "confidence": None,
                             **(intent or {})}
    return context
