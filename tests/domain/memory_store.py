"""An in-memory ``rules_engine.domain.ports.DomainStore``: the domain's unit tests run the lifecycle,
the aggregate and the built-in handlers on it, with no database (and no SQLAlchemy).

It keeps the store's promises that the domain relies on: at most one open conversation per
contact (a second open returns the open one), a close only of an open conversation, tags
and fields that report whether they changed, merges that move identities, tags and missing
fields, and status moves that never go back.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from rules_engine.domain.model import (
    MOVES_FROM,
    CloseSource,
    Contact,
    Conversation,
    OpenSource,
    OutboxStatus,
)
from rules_engine.domain.timers import Timer


class MemoryOutbox:
    """The outbox's rows in a dict."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def enqueue(self, *, values: Mapping[str, Any], at: datetime) -> int:
        outbox_id = next(self._ids)
        self.rows[outbox_id] = {**values, "id": outbox_id, "status": OutboxStatus.PENDING,
                                "created_at": at, "platform_message_id": None,
                                "sent_at": None}
        return outbox_id

    def by_platform_id(self, channel: str, platform_message_id: str) -> dict[str, Any] | None:
        return next((dict(row) for row in self.rows.values() if row["channel"] == channel
                     and row["platform_message_id"] == platform_message_id), None)

    def sent_before(self, channel: str, recipient: str,
                    watermark: datetime) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows.values()
                if row["channel"] == channel and row["recipient"] == recipient
                and row["sent_at"] is not None and row["sent_at"] <= watermark
                and row["status"] in (OutboxStatus.SENT, OutboxStatus.DELIVERED)]

    def move(self, outbox_id: int, status: OutboxStatus, at: datetime,
             error: Mapping[str, Any] | None = None) -> bool:
        row = self.rows[outbox_id]
        if row["status"] not in MOVES_FROM[status]:
            return False
        row.update(status=status, error=dict(error) if error else None)
        return True


class MemoryStore:
    """Contacts, identities, tags, fields, conversations and timers in dicts."""

    def __init__(self) -> None:
        self.outbound = MemoryOutbox()
        self.contacts: dict[int, Contact] = {}
        self.identities: dict[tuple[str, str], dict[str, Any]] = {}
        self.tags: dict[int, set[str]] = {}
        self.fields: dict[int, dict[str, Any]] = {}
        self.conversations: dict[int, Conversation] = {}
        self.timers: dict[str, Timer] = {}
        self._contact_ids = itertools.count(1)
        self._conversation_ids = itertools.count(1)

    # what a test sets up
    def add_contact(self, *, at: datetime, channel: str, external_id: str,
                    name: str | None = None) -> Contact:
        contact = Contact(id=next(self._contact_ids), name=name, created_at=at)
        self.contacts[contact.id] = contact
        self.identities[(channel, external_id)] = {
            "contact_id": contact.id, "last_inbound_at": None, "opted_out_at": None}
        return contact

    # contacts
    def get_contact(self, contact_id: int, *, lock: bool = False) -> Contact | None:
        return self.contacts.get(contact_id)

    def lock_contacts(self, contact_ids: list[int]) -> dict[int, Contact]:
        return {i: self.contacts[i] for i in sorted(set(contact_ids)) if i in self.contacts}

    def find_contact_by_identity(self, channel: str, external_id: str, *,
                                 lock: bool = False) -> Contact | None:
        found = self.identities.get((channel, external_id))
        return self.contacts[found["contact_id"]] if found else None

    def contact_details(self, contact_id: int) -> dict[str, Any]:
        identities = [{"channel": channel, "external_id": external_id}
                      for (channel, external_id), row in self.identities.items()
                      if row["contact_id"] == contact_id]
        return {"tags": sorted(self.tags.get(contact_id, ())),
                "fields": dict(self.fields.get(contact_id, {})),
                "identities": sorted(identities, key=lambda identity: identity["channel"]),
                "open_conversation": self._open_of(contact_id)}

    def add_tag(self, contact_id: int, tag: str) -> bool:
        tags = self.tags.setdefault(contact_id, set())
        added = tag not in tags
        tags.add(tag)
        return added

    def remove_tag(self, contact_id: int, tag: str) -> bool:
        tags = self.tags.setdefault(contact_id, set())
        removed = tag in tags
        tags.discard(tag)
        return removed

    def set_field(self, contact_id: int, name: str, value: Any) -> bool:
        fields = self.fields.setdefault(contact_id, {})
        changed = name not in fields or fields[name] != value
        fields[name] = value
        return changed

    def merge_contacts(self, primary_id: int, secondary_id: int) -> None:
        for row in self.identities.values():
            if row["contact_id"] == secondary_id:
                row["contact_id"] = primary_id
        self.tags.setdefault(primary_id, set()).update(self.tags.pop(secondary_id, set()))
        for name, value in self.fields.get(secondary_id, {}).items():
            self.fields.setdefault(primary_id, {}).setdefault(name, value)
        for contact in list(self.contacts.values()):
            if contact.id == secondary_id or contact.merged_into == secondary_id:
                self.contacts[contact.id] = replace(contact, merged_into=primary_id)

    def note_inbound(self, channel: str, external_id: str, at: datetime) -> None:
        row = self.identities.get((channel, external_id))
        if row and (row["last_inbound_at"] is None or row["last_inbound_at"] < at):
            row["last_inbound_at"] = at
            if row["opted_out_at"] is not None and row["opted_out_at"] < at:
                row["opted_out_at"] = None

    def note_opt_out(self, channel: str, external_id: str, at: datetime) -> None:
        row = self.identities.get((channel, external_id))
        if row and (row["last_inbound_at"] is None or row["last_inbound_at"] <= at):
            row["opted_out_at"] = at

    # conversations
    def _open_of(self, contact_id: int) -> Conversation | None:
        return next((c for c in self.conversations.values()
                     if c.contact_id == contact_id and c.is_open), None)

    def get_conversation(self, conversation_id: int) -> Conversation | None:
        return self.conversations.get(conversation_id)

    def conversations_of(self, contact_id: int) -> list[Conversation]:
        return sorted((c for c in self.conversations.values() if c.contact_id == contact_id),
                      key=lambda c: (c.opened_at, c.id))

    def open_conversation(self, *, contact_id: int, channel: str | None, source: OpenSource,
                          actor: str | None, at: datetime, event_id: str | None,
                          assignee: str | None = None,
                          team: str | None = None) -> tuple[Conversation, bool]:
        already = self._open_of(contact_id)
        if already is not None:
            return already, False
        conversation = Conversation(id=next(self._conversation_ids), contact_id=contact_id,
                                    channel=channel, opened_at=at, open_source=source,
                                    opened_by=actor, assignee=assignee, team=team)
        self.conversations[conversation.id] = conversation
        return conversation, True

    def close_conversation(self, conversation_id: int, *, source: CloseSource,
                           actor: str | None, at: datetime, event_id: str | None,
                           resolution_seconds: int,
                           note: str | None = None) -> Conversation | None:
        conversation = self.conversations[conversation_id]
        if not conversation.is_open:
            return None
        closed = replace(conversation, closed_at=at, close_source=source, closed_by=actor,
                         closing_note=note)
        self.conversations[conversation_id] = closed
        return closed

    def assign(self, before: Conversation, *, assignee: str | None,
               team: str | None, clear: tuple[str, ...] = ()) -> Conversation:
        conversation = self.conversations[before.id]
        assigned = replace(
            conversation,
            assignee=None if "assignee" in clear else assignee or conversation.assignee,
            team=None if "team" in clear else team or conversation.team)
        self.conversations[before.id] = assigned
        return assigned

    def set_bot_active(self, conversation_id: int, active: bool) -> bool:
        conversation = self.conversations[conversation_id]
        if conversation.bot_active == active:
            return False
        self.conversations[conversation_id] = replace(conversation, bot_active=active)
        return True

    def record_reply(self, conversation: Conversation, *, at: datetime,
                     first_response: bool) -> Conversation:
        replied = replace(self.conversations[conversation.id], last_reply_at=at,
                          **({"first_response_at": at} if first_response else {}))
        self.conversations[conversation.id] = replied
        return replied

    # timers
    def set_timers(self, timers: list[Timer]) -> None:
        self.timers.update({timer.id: timer for timer in timers})

    def drop_timers(self, conversation_id: int) -> int:
        dropped = [key for key, timer in self.timers.items()
                   if timer.conversation_id == conversation_id]
        for key in dropped:
            del self.timers[key]
        return len(dropped)
