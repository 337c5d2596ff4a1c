"""A contact's aggregate: everything rules can read about one contact, loaded once per event.

The contact's row is locked for the event's transaction before its aggregate is loaded
(``Engine`` resolves and locks the contact first), so what is loaded stays true until the
transaction ends, except for the changes this event makes itself, which ``Lifecycle``
applies to the aggregate as it writes them. Conditions of chained facts read the
aggregate, and so see the effects of earlier actions, without reading the store again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rules_engine.domain.model import Contact, Conversation

if TYPE_CHECKING:
    from rules_engine.domain.ports import DomainStore


@dataclass(slots=True)
class ContactState:
    """One contact as rules see it during one event."""

    contact: Contact
    tags: list[str]
    fields: dict[str, Any]
    identities: list[dict[str, Any]]
    open_conversation: Conversation | None
    conversations: dict[int, Conversation] = field(default_factory=dict)  # seen in this event


def load_state(tx: DomainStore, contact: Contact) -> ContactState:
    """The aggregate of a contact whose row this transaction has locked."""
    details = tx.contact_details(contact.id)
    open_conversation = details.pop("open_conversation")
    state = ContactState(contact=contact, open_conversation=open_conversation, **details)
    if open_conversation is not None:
        state.conversations[open_conversation.id] = open_conversation
    return state
