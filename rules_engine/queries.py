"""Read-only questions the edges ask of the store (contacts, conversations, traces)."""
from __future__ import annotations

from typing import Any

from rules_engine.domain.errors import NotFoundError
from rules_engine.domain.model import Conversation
from rules_engine.store import Store
from rules_engine.trace.forms import expand, read_trace
from rules_engine.trace.shapes import Outcome, Trace


def find_contacts(store: Store, channel: str, external_id: str) -> list[dict[str, Any]]:
    """Contacts with this channel identity, each with its id, name and identities."""
    with store.read() as tx:
        return [
            {"id": c.id, "name": c.name, "created_at": c.created_at.isoformat(),
             "identities": tx.identities(c.id), "tags": tx.tags(c.id)}
            for c in tx.find_contacts(channel, external_id)
        ]


def contact_conversations(store: Store, contact_id: int) -> list[dict[str, Any]]:
    """A contact's conversations, oldest first; NotFoundError for an unknown contact."""
    with store.read() as tx:
        if tx.get_contact(contact_id) is None:
            raise NotFoundError(f"contact {contact_id} does not exist")
        return [c.to_dict() for c in tx.conversations_of(contact_id)]


def conversation(store: Store, conversation_id: int) -> Conversation:
    """One conversation; NotFoundError when there is none with this id."""
    with store.read() as tx:
        found = tx.get_conversation(conversation_id)
    if found is None:
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    return found


def notes(store: Store, *, conversation_id: int | None = None,
          limit: int = 100) -> list[dict[str, Any]]:
    """Internal notes, newest first: one conversation's (NotFoundError when it does not
    exist), or the latest of every conversation."""
    with store.read() as tx:
        if conversation_id is not None and tx.get_conversation(conversation_id) is None:
            raise NotFoundError(f"conversation {conversation_id} does not exist")
        rows = tx.notes(conversation_id=conversation_id, limit=limit)
    return [{**row, "created_at": row["created_at"].isoformat()} for row in rows]


def event_trace(store: Store, event_id: str) -> Trace:
    """The stored trace of one processed event; NotFoundError when it was never processed."""
    with store.read() as tx:
        trace = read_trace(tx, event_id)
    if trace is None:
        raise NotFoundError(f"no trace for event '{event_id}'")
    return trace


def _changes(trace: dict[str, Any] | None) -> list[Outcome]:
    """What a stored trace's event changed (None: the trace was pruned)."""
    return expand(trace, None)["changes"] if trace is not None else []


def recent_events(store: Store, *, limit: int, contact_id: int | None = None) -> list[dict[str, Any]]:
    """Processed events, newest first: id, type, channel, contact, when, what fired and changed."""
    with store.read() as tx:
        rows = tx.recent_events(limit=limit, contact_id=contact_id)
    return [{"event_id": row["event_id"], "type": row["type"], "channel": row["channel"],
             "contact_id": row["contact_id"], "received_at": row["received_at"].isoformat(),
             "fired": list((row["trace"] or {}).get("fired", [])),
             "changes": [c["operation"] for c in _changes(row["trace"])],
             "trace": "kept" if row["trace"] is not None else "pruned"}
            for row in rows]
