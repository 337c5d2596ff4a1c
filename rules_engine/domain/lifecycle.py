"""The conversation lifecycle and contact changes, as the product document states them.

Every operation returns an ``Outcome``: whether it changed anything, what it did, and the
facts it emits for rules to react to. Opening when a conversation is open, or closing when
none is, is a reported no-op (``applied`` False), never an error.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rules_engine.domain.aggregate import ContactState, load_state
from rules_engine.domain.balancing import Strategy, choose
from rules_engine.domain.errors import EventError, NotFoundError
from rules_engine.domain.model import (
    AnyEventType,
    CloseSource,
    Contact,
    Conversation,
    EventType,
    OpenSource,
)
from rules_engine.domain.redaction import redact_url
from rules_engine.domain.timers import Timer, wait_timer_id

if TYPE_CHECKING:
    from rules_engine.domain.ports import DomainStore


@dataclass(frozen=True, slots=True)
class Fact:
    """An engine event emitted by a change of state, for rules to trigger on."""

    type: AnyEventType
    contact_id: int
    channel: str | None
    conversation_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """What one operation did; ``to_dict`` is its line in the trace."""

    operation: str
    applied: bool
    detail: str
    facts: list[Fact] = field(default_factory=list)
    conversation_id: int | None = None
    failed: bool = False
    defers: bool = False  # a wait: the rule's remaining actions run later

    @property
    def status(self) -> str:
        """``applied``, ``noop`` (nothing to change) or ``error`` (could not run)."""
        return "error" if self.failed else "applied" if self.applied else "noop"

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "outcome": self.status,
            "detail": self.detail,
            "conversation_id": self.conversation_id,
        }


class Lifecycle:
    """State changes for one event, inside its unit of work.

    Holds the aggregate (``ContactState``) of each contact the event touches, loaded once
    and kept true as this event changes it, so conditions and actions read it instead of
    the store.
    """

    def __init__(self, tx: DomainStore, *, event_id: str, at: datetime) -> None:
        self.tx = tx
        self.event_id = event_id
        self.at = at
        self._states: dict[int, ContactState] = {}
        self._waits = 0
        # what this event set, by (conversation or contact id, what), and who set it
        self._set_by: dict[tuple[str, str], str] = {}

    def seed(self, contact: Contact) -> ContactState:
        """Load the aggregate of a contact whose row the transaction has locked."""
        state = self._states[contact.id] = load_state(self.tx, contact)
        return state

    def state(self, contact_id: int) -> ContactState:
        """The contact's aggregate (loaded, and its row locked, on first use)."""
        state = self._states.get(contact_id)
        if state is None:
            contact = self.tx.get_contact(contact_id, lock=True)
            if contact is None:
                raise NotFoundError(f"contact {contact_id} does not exist")
            state = self.seed(contact)
        return state

    def conversation(self, conversation_id: int) -> Conversation | None:
        """A conversation, as this event last saw or changed it."""
        for state in self._states.values():
            if conversation_id in state.conversations:
                return state.conversations[conversation_id]
        return self.tx.get_conversation(conversation_id)

    def _remember(self, conversation: Conversation, *, still_open: bool) -> None:
        state = self._states.get(conversation.contact_id)
        if state is None:
            return
        state.conversations[conversation.id] = conversation
        if still_open:
            state.open_conversation = conversation
        elif state.open_conversation is not None and state.open_conversation.id == conversation.id:
            state.open_conversation = None

    def open(
        self,
        contact_id: int,
        *,
        channel: str | None,
        source: OpenSource,
        actor: str | None,
        assignee: str | None = None,
        team: str | None = None,
    ) -> Outcome:
        """Open a conversation for the contact unless one is already open."""
        known = self.state(contact_id).open_conversation
        if known is not None:
            return Outcome("open_conversation", False,
                           f"conversation {known.id} is already open", [], known.id)
        conversation, created = self.tx.open_conversation(
            contact_id=contact_id, channel=channel, source=source, actor=actor,
            at=self.at, event_id=self.event_id, assignee=assignee, team=team,
        )
        self._remember(conversation, still_open=True)
        if not created:
            return Outcome("open_conversation", False,
                           f"conversation {conversation.id} is already open", [], conversation.id)
        fact = Fact(EventType.CONVERSATION_OPENED, contact_id, channel, conversation.id,
                    {"open_source": str(source)})
        return Outcome("open_conversation", True,
                       f"opened conversation {conversation.id} ({source})", [fact], conversation.id)

    def contact_channel(self, contact_id: int) -> str | None:
        """The channel a person talks to us on: that of their latest conversation, else of
        their first identity (a conversation a user opens by hand belongs there)."""
        history = self.tx.conversations_of(contact_id)  # the rare user's open: read it
        if history and history[-1].channel:
            return history[-1].channel
        identities = self.state(contact_id).identities
        return identities[0]["channel"] if identities else None

    def close(
        self, contact_id: int, *, source: CloseSource, actor: str | None, note: str | None = None
    ) -> Outcome:
        """Close the contact's open conversation, if there is one."""
        conversation = self.state(contact_id).open_conversation
        if conversation is None:
            return Outcome("close_conversation", False, "no open conversation")
        return self.close_conversation(conversation, source=source, actor=actor, note=note)

    def close_conversation(
        self, conversation: Conversation, *, source: CloseSource, actor: str | None,
        note: str | None = None,
    ) -> Outcome:
        """Close this conversation if it is still open."""
        at = max(self.at, conversation.opened_at)
        closed = self.tx.close_conversation(
            conversation.id, source=source, actor=actor, at=at, event_id=self.event_id,
            resolution_seconds=int((at - conversation.opened_at).total_seconds()), note=note)
        if closed is None:
            return Outcome("close_conversation", False,
                           f"conversation {conversation.id} is already closed", [], conversation.id)
        self.tx.drop_timers(closed.id)  # its idle clocks and waits end with it
        self._remember(closed, still_open=False)
        fact = Fact(EventType.CONVERSATION_CLOSED, closed.contact_id, closed.channel, closed.id,
                    {"close_source": str(source)})
        return Outcome("close_conversation", True,
                       f"closed conversation {closed.id} ({source})", [fact], closed.id)

    def assign(self, contact_id: int, *, user: str | None, team: str | None,
               by: str | None = None) -> Outcome:
        """Assign the contact's open conversation to a user and/or team (``by``: who asks,
        e.g. ``rule 'refund'``, named when a later assignment in this event replaces it)."""
        conversation = self.state(contact_id).open_conversation
        if conversation is None:
            return Outcome("assign", False, "no open conversation to assign")
        if (user is None or user == conversation.assignee) and (team is None or team == conversation.team):
            return Outcome("assign", False, "already assigned so", [], conversation.id)
        updated = self.tx.assign(conversation, assignee=user, team=team)
        self._remember(updated, still_open=True)
        fact = Fact(EventType.CONVERSATION_ASSIGNED, contact_id, updated.channel, updated.id,
                    {"assignee": updated.assignee, "team": updated.team})
        changes = [(what, old, new) for what, old, new in (
            ("user", conversation.assignee, updated.assignee),
            ("team", conversation.team, updated.team)) if old != new]
        detail = f"assigned conversation {updated.id} to " + " and ".join(
            f"{what} {new}" for what, _, new in changes)
        return Outcome("assign", True, detail + self._overwrites(f"conversation {updated.id}", changes, by),
                       [fact], updated.id)

    def assign_balanced(self, contact_id: int, *, team: str, strategy: Strategy,
                        available_only: bool, max_open: int | None,
                        by: str | None = None) -> Outcome:
        """Assign the open conversation to a free member of ``team`` (see
        ``balancing.choose``). When nobody is free it stays with the team, unassigned, and
        ``conversation.unassignable`` says why."""
        conversation = self.state(contact_id).open_conversation
        if conversation is None:
            return Outcome("assign", False, "no open conversation to assign")
        roster = self.tx.teams.lock_roster(team)  # after the contact: the engine's lock order
        if conversation.team == team and conversation.assignee in {m.name for m in roster.members}:
            return Outcome("assign", False, f"already assigned to {conversation.assignee} "
                           f"of team {team}", [], conversation.id)
        choice = choose(roster, strategy, available_only=available_only, max_open=max_open)
        if choice.member is not None:
            self.tx.teams.gave(team, choice.member)
            outcome = self.assign(contact_id, user=choice.member, team=team, by=by)
            outcome.detail += f" ({strategy}: {choice.reason})"
            return outcome
        clear = ("assignee",) if conversation.assignee is not None else ()
        updated = self.tx.assign(conversation, assignee=None, team=team, clear=clear)
        self._remember(updated, still_open=True)
        fact = Fact(EventType.CONVERSATION_UNASSIGNABLE, contact_id, updated.channel, updated.id,
                    {"team": team, "strategy": str(strategy), "reason": choice.reason})
        return Outcome("assign", updated != conversation,
                       f"{choice.reason}: conversation {updated.id} stays with team {team}, "
                       "unassigned", [fact], updated.id)

    def unassign(self, contact_id: int, *, team: bool, by: str | None = None) -> Outcome:
        """Take the open conversation from its user (and, with ``team``, from its team)."""
        conversation = self.state(contact_id).open_conversation
        if conversation is None:
            return Outcome("unassign", False, "no open conversation to unassign")
        cleared = tuple(column for column, had in (("assignee", conversation.assignee),
                                                   ("team", conversation.team if team else None))
                        if had is not None)
        if not cleared:
            return Outcome("unassign", False, "not assigned", [], conversation.id)
        updated = self.tx.assign(conversation, assignee=None, team=None, clear=cleared)
        self._remember(updated, still_open=True)
        fact = Fact(EventType.CONVERSATION_UNASSIGNED, contact_id, updated.channel, updated.id,
                    {"assignee": conversation.assignee if "assignee" in cleared else None,
                     "team": conversation.team if "team" in cleared else None})
        changes = [(("user" if column == "assignee" else column), getattr(conversation, column), None)
                   for column in cleared]
        detail = f"unassigned conversation {updated.id} from " + " and ".join(
            f"{what} {old}" for what, old, _ in changes)
        return Outcome("unassign", True, detail + self._overwrites(f"conversation {updated.id}", changes, by),
                       [fact], updated.id)

    def _overwrites(self, key: str, changes: list[tuple[str, Any, Any]],
                    by: str | None) -> str:
        """Note what this event set before and now replaces (``explain`` shows it), and
        remember who set what."""
        replaced = []
        for what, old, _ in changes:
            earlier = self._set_by.get((key, what))
            if earlier is not None and earlier != (by or "the event"):
                replaced.append(f"{what} {old!s} set by {earlier} in this event")
            self._set_by[(key, what)] = by or "the event"
        return f" (overwrites {'; '.join(replaced)})" if replaced else ""

    def add_tags(self, contact_id: int, tags: list[str], channel: str | None) -> Outcome:
        """Tag the contact; each new tag emits ``contact.tag_added``."""
        state = self.state(contact_id)
        added = [tag for tag in dict.fromkeys(tags)
                 if tag not in state.tags and self.tx.add_tag(contact_id, tag)]
        state.tags = sorted({*state.tags, *added})
        return self._tag_outcome("add_tag", EventType.CONTACT_TAG_ADDED, contact_id, channel,
                                 added, f"added {', '.join(added)}", "already tagged")

    def remove_tags(self, contact_id: int, tags: list[str], channel: str | None) -> Outcome:
        """Untag the contact; each removed tag emits ``contact.tag_removed``."""
        state = self.state(contact_id)
        removed = [tag for tag in dict.fromkeys(tags)
                   if tag in state.tags and self.tx.remove_tag(contact_id, tag)]
        state.tags = [tag for tag in state.tags if tag not in removed]
        return self._tag_outcome("remove_tag", EventType.CONTACT_TAG_REMOVED, contact_id, channel,
                                 removed, f"removed {', '.join(removed)}", "tags were not set")

    @staticmethod
    def _tag_outcome(operation: str, fact_type: EventType, contact_id: int, channel: str | None,
                     changed: list[str], applied: str, unchanged: str) -> Outcome:
        facts = [Fact(fact_type, contact_id, channel, None, {"tag": tag}) for tag in changed]
        return Outcome(operation, bool(changed), applied if changed else unchanged, facts)

    def set_field(self, contact_id: int, name: str, value: Any, channel: str | None,
                  by: str | None = None) -> Outcome:
        """Set a contact attribute; a change emits ``contact.field_set``."""
        state = self.state(contact_id)
        old = state.fields.get(name)
        if name in state.fields and old == value \
                or not self.tx.set_field(contact_id, name, value):
            return Outcome("set_field", False, f"{name} already has that value")
        state.fields[name] = value
        fact = Fact(EventType.CONTACT_FIELD_SET, contact_id, channel, None,
                    {"name": name, "value": value})
        overwrites = self._overwrites(f"contact {contact_id}", [(f"field {name}", old, value)], by)
        return Outcome("set_field", True, f"set {name}{overwrites}", [fact])

    def add_note(self, contact_id: int, text: str, *, by: str) -> Outcome:
        """Leave an internal note (for the agents, never sent) on the open conversation."""
        conversation = self.state(contact_id).open_conversation
        if conversation is None:
            return Outcome("add_note", False, "no open conversation to note on")
        note_id = self.tx.add_note(conversation.id, text=text, author=by, at=self.at,
                                   event_id=self.event_id)
        return Outcome("add_note", True, f"noted on conversation {conversation.id} "
                       f"(note {note_id})", [], conversation.id)

    def set_bot_status(self, contact_id: int, active: bool, channel: str | None) -> Outcome:
        """Hand the open conversation to a human (False) or back to the bot (True)."""
        conversation = self.state(contact_id).open_conversation
        if conversation is None:
            return Outcome("set_bot_status", False, "no open conversation")
        if conversation.bot_active == active or not self.tx.set_bot_active(conversation.id, active):
            return Outcome("set_bot_status", False, "bot status unchanged", [], conversation.id)
        self._remember(replace(conversation, bot_active=active), still_open=True)
        fact = Fact(EventType.BOT_STATUS_CHANGED, contact_id, channel, conversation.id,
                    {"bot_active": active})
        detail = "handed to the bot" if active else "handed to a human"
        return Outcome("set_bot_status", True, detail, [fact], conversation.id)

    def queue_outbound(self, *, action: str, rule_id: str, path: str, target: str,
                       recipient: str | None, url: str | None, method: str,
                       headers: dict[str, str], body: Any, channel: str | None = None,
                       contact_id: int | None = None) -> Outcome:
        """Write an outbound call to the outbox, in this event's transaction; workers deliver
        it (a message: to ``recipient``, the contact's identity on ``channel``)."""
        key = hashlib.sha256(f"{self.event_id}\0{rule_id}\0{path}".encode()).hexdigest()[:40]
        outbox_id = self.tx.outbound.enqueue(values={
            "event_id": self.event_id, "rule_id": rule_id, "action": action, "target": target,
            "channel": channel, "contact_id": contact_id, "recipient": recipient, "url": url,
            "method": method, "headers": headers, "body": body, "idempotency_key": key},
            at=self.at)
        where = redact_url(url) if url is not None else f"{target} {recipient}"
        return Outcome(action, True, f"queued outbox #{outbox_id} ({method} {where})")

    def wait(self, contact_id: int, *, rule_id: str, due_at: datetime,
             payload: dict[str, Any]) -> Outcome:
        """Set a durable timer for the rest of a rule's actions; it belongs to the open
        conversation (closing it drops the timer)."""
        self._waits += 1
        conversation = self.state(contact_id).open_conversation
        timer = Timer(wait_timer_id(self.event_id, rule_id, self._waits), "wait", contact_id,
                      conversation.id if conversation else None, rule_id, due_at,
                      self.event_id, payload)
        self.tx.set_timers([timer])
        return Outcome("wait", True, f"the rest runs at {due_at:%Y-%m-%d %H:%M:%S} UTC", [],
                       timer.conversation_id, defers=True)

    def record_reply(self, contact_id: int, *, by_agent: bool) -> Outcome:
        """Note a reply (message.sent) on the open conversation: its latest reply and, for
        the first agent's reply, the first response time. A reply never opens one."""
        conversation = self.state(contact_id).open_conversation
        if conversation is None:
            return Outcome("record_reply", False, "no open conversation (a reply never opens one)")
        first = by_agent and conversation.first_response_at is None
        updated = self.tx.record_reply(conversation, at=self.at, first_response=first)
        self._remember(updated, still_open=True)
        detail = "first response" if first else "reply"
        return Outcome("record_reply", True, f"{detail} on conversation {updated.id}", [],
                       updated.id)

    def merge(self, primary_id: int, secondary_id: int, *, actor: str | None) -> list[Outcome]:
        """Merge the secondary contact into the primary; its open conversation closes."""
        if primary_id == secondary_id:
            raise EventError("a contact cannot be merged into itself")
        locked = self.tx.lock_contacts([primary_id, secondary_id])  # in id order: never crossed
        primary, secondary = locked.get(primary_id), locked.get(secondary_id)
        if primary is None:
            raise NotFoundError(f"contact {primary_id} does not exist", path="contact/id")
        if secondary is None:
            raise NotFoundError(f"contact {secondary_id} does not exist",
                                path="secondary_contact_id")
        if secondary.merged_into == primary_id:
            return [Outcome("merge_contacts", False,
                            f"contact {secondary_id} was already merged into {primary_id}")]
        if primary.merged_into is not None:
            raise EventError(f"contact {primary_id} was merged into contact "
                             f"{primary.merged_into}; it cannot take another contact",
                             path="contact/id", hint=f"merge into contact {primary.merged_into}")
        if secondary.merged_into is not None:
            raise EventError(f"contact {secondary_id} was already merged into contact "
                             f"{secondary.merged_into}", path="secondary_contact_id",
                             hint=f"merge contact {secondary.merged_into} instead")
        self.seed(secondary)
        closed = self.close(secondary_id, source=CloseSource.CONTACT_MERGE, actor=actor)
        self.tx.merge_contacts(primary_id, secondary_id)
        self._states.pop(primary_id, None)  # identities, tags and fields moved: read again
        self._states.pop(secondary_id, None)
        merged_fact = Fact(EventType.CONTACTS_MERGED, primary_id, None, None,
                           {"secondary_contact_id": secondary_id})
        merged = Outcome("merge_contacts", True,
                         f"merged contact {secondary_id} into {primary_id}", [merged_fact])
        return [closed, merged]
