"""The domain's one door to storage: exactly what the lifecycle, the contact aggregate and
the built-in handlers of inputs read and write, as Protocols.

The store (``rules_engine.store.StoreTx``) implements them over SQL; ``tests/domain/memory_store.py``
implements them in memory, so that the domain's tests run without a database (and without
SQLAlchemy imported). Nothing here imports the store.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from rules_engine.domain.model import CloseSource, Contact, Conversation, OpenSource, OutboxStatus

if TYPE_CHECKING:
    from rules_engine.domain.balancing import Roster
    from rules_engine.domain.timers import Timer


class OutboxPort(Protocol):
    """The outbox as the domain sees it: queue a call, move a sent one on."""

    def enqueue(self, *, values: Mapping[str, Any], at: datetime) -> int: ...

    def by_platform_id(self, channel: str, platform_message_id: str) -> dict[str, Any] | None: ...

    def sent_before(self, channel: str, recipient: str,
                    watermark: datetime) -> list[dict[str, Any]]: ...

    def move(self, outbox_id: int, status: OutboxStatus, at: datetime,
             error: Mapping[str, Any] | None = None) -> bool: ...


class TeamsPort(Protocol):
    """Teams as balanced assignment sees them."""

    def lock_roster(self, team: str) -> Roster:
        """The team's members with their open counts, its rotation locked until the unit of
        work ends (no members: nobody was ever added to it)."""
        ...

    def gave(self, team: str, user: str) -> None:
        """Note that the team gave its latest conversation to ``user`` (the rotation)."""
        ...


class DomainStore(Protocol):
    """The reads and writes of one unit of work that the domain makes."""

    @property
    def outbound(self) -> OutboxPort: ...

    @property
    def teams(self) -> TeamsPort: ...

    # contacts
    def get_contact(self, contact_id: int, *, lock: bool = False) -> Contact | None: ...

    def lock_contacts(self, contact_ids: list[int]) -> dict[int, Contact]: ...

    def find_contact_by_identity(self, channel: str, external_id: str, *,
                                 lock: bool = False) -> Contact | None: ...

    def contact_details(self, contact_id: int) -> dict[str, Any]: ...

    def add_tag(self, contact_id: int, tag: str) -> bool: ...

    def remove_tag(self, contact_id: int, tag: str) -> bool: ...

    def set_field(self, contact_id: int, name: str, value: Any) -> bool: ...

    def merge_contacts(self, primary_id: int, secondary_id: int) -> None: ...

    def note_inbound(self, channel: str, external_id: str, at: datetime) -> None: ...

    def note_opt_out(self, channel: str, external_id: str, at: datetime) -> None: ...

    # conversations
    def get_conversation(self, conversation_id: int) -> Conversation | None: ...

    def conversations_of(self, contact_id: int) -> list[Conversation]: ...

    def open_conversation(self, *, contact_id: int, channel: str | None, source: OpenSource,
                          actor: str | None, at: datetime, event_id: str | None,
                          assignee: str | None = None,
                          team: str | None = None) -> tuple[Conversation, bool]: ...

    def close_conversation(self, conversation_id: int, *, source: CloseSource,
                           actor: str | None, at: datetime, event_id: str | None,
                           resolution_seconds: int,
                           note: str | None = None) -> Conversation | None: ...

    def assign(self, conversation: Conversation, *, assignee: str | None,
               team: str | None, clear: tuple[str, ...] = ()) -> Conversation: ...

    def set_bot_active(self, conversation_id: int, active: bool) -> bool: ...

    def add_note(self, conversation_id: int, *, text: str, author: str, at: datetime,
                 event_id: str | None) -> int: ...

    def record_reply(self, conversation: Conversation, *, at: datetime,
                     first_response: bool) -> Conversation: ...

    # timers
    def set_timers(self, timers: list[Timer]) -> None: ...

    def drop_timers(self, conversation_id: int) -> int: ...

    def drop_timer(self, timer_id: str) -> int: ...

    def schedule_timers(self) -> list[Timer]: ...

    def claim_due_schedule(self, now: datetime) -> Timer | None: ...

    def move_timer(self, timer: Timer) -> None: ...

    def schedule_targets(self, applies_to: str, *, after: int,
                         limit: int) -> list[tuple[int, int | None]]: ...
