"""The event context that conditions read: which names each event type provides."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from rules_engine.domain.model import Conversation, EventType, Message

if TYPE_CHECKING:
    from rules_engine.domain.lifecycle import Lifecycle


class _Leaf:
    """A plain value (string, number, boolean, list): it has no fields."""

    def __repr__(self) -> str:
        return "LEAF"


class _Free:
    """A free-form mapping (parameters, custom fields): any field name may be read."""

    def __repr__(self) -> str:
        return "FREE"


LEAF = _Leaf()
FREE = _Free()
Spec: TypeAlias = _Leaf | _Free | Mapping[str, "Spec"]

EVENT: Spec = {"id": LEAF, "type": LEAF, "channel": LEAF, "timestamp": LEAF, "depth": LEAF}
CONTACT: Spec = {
    "id": LEAF,
    "name": LEAF,
    "tags": LEAF,
    "fields": FREE,
    "identities": LEAF,
    "created_at": LEAF,
    "is_new": LEAF,
}
CONVERSATION: Spec = {
    "id": LEAF,
    "is_open": LEAF,
    "status": LEAF,
    "channel": LEAF,
    "open_source": LEAF,
    "close_source": LEAF,
    "opened_at": LEAF,
    "closed_at": LEAF,
    "opened_by": LEAF,
    "closed_by": LEAF,
    "assignee": LEAF,
    "team": LEAF,
    "bot_active": LEAF,
    "first_response_at": LEAF,
    "last_reply_at": LEAF,
}
MESSAGE: Spec = {"id": LEAF, "text": LEAF, "quick_reply": LEAF, "postback": LEAF,
                 "attachments": LEAF, "reply_to": LEAF, "edited": LEAF}
INTENT: Spec = {"name": LEAF, "display_name": LEAF, "confidence": LEAF}

_COMMON: dict[str, Spec] = {
    "event": EVENT,
    "contact": CONTACT,
    "conversation": CONVERSATION,
    "channel": LEAF,
    "params": FREE,
}

# The roots each trigger's conditions may read. Facts carry their details in ``params``
# (e.g. ``params.tag`` for contact.tag_added, ``params.secondary_contact_id`` for a merge).
ROOTS_BY_EVENT: dict[EventType, dict[str, Spec]] = {
    EventType.MESSAGE_RECEIVED: {**_COMMON, "message": MESSAGE},
    EventType.MESSAGE_SENT: {**_COMMON, "message": MESSAGE, "actor": LEAF},
    EventType.DIALOGFLOW_FULFILLMENT: {**_COMMON, "message": MESSAGE, "intent": INTENT},
    # params.for and params.of: the idle rule's own trigger
}


def every_root() -> dict[str, Spec]:
    """Every name any trigger provides: to check a rule whose trigger is itself invalid."""
    merged: dict[str, Spec] = dict(_COMMON)
    for roots in ROOTS_BY_EVENT.values():
        merged.update(roots)
    return merged


def roots_for(event_type: EventType) -> dict[str, Spec]:
    """The names a condition on ``event_type`` may use, with the fields of each."""
    return ROOTS_BY_EVENT.get(event_type, _COMMON)


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
    event_type: EventType,
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
    if event_type is EventType.MESSAGE_SENT:
        context["actor"] = actor
    if event_type is EventType.DIALOGFLOW_FULFILLMENT:
        context["intent"] = {"name": None, "display_name": None, "confidence": None,
                             **(intent or {})}
    return context
