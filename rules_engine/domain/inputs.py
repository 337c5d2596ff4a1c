"""What each incoming event does before any rule runs, as the product document states it.

- a message from a contact with no open conversation opens one (``incoming_message``);
- a welcome event (channels that send one) opens one if none is open (``welcome_event``);
- a reply sent by an agent or a bot (``message.sent``) never opens one: it is recorded on
  the open conversation, if any (the first agent's reply as its first response);
- a reaction (``message.reaction``) or a deletion (``message.deleted``) changes nothing
  before rules run: it never opens or reopens a conversation, and (not being a message)
  restarts no idle clock;
- a timer's firing: ``conversation.idle`` (its rule runs if the conversation is still
  open), ``wait.ended`` (the engine resumes the waiting rule), ``date`` and
  ``schedule`` (nothing before their one rule runs);
- a contact's message, welcome or fulfillment notes when they last wrote on that identity
  (the platforms' reply windows run from it); their opt-out (``contact.unsubscribed``)
  notes it too, so that no message is sent to them there until they write again; rules
  react to both;
- ``message.delivered`` / ``message.read`` / ``message.failed`` move the outbox rows they
  report on (see rules_engine.domain.message_status);
- a Dialogflow fulfillment with ``RB_MARKDONE`` true closes the open one (``dialogflow``),
  false opens one if none is open; ``RB_ADDTAGS`` / ``RB_REMOVETAGS`` / ``RB_BOTSTATUS``
  tag, untag and hand over to a human;
- the users' commands open (``user``), close (``user``) and merge contacts
  (``contact_merge`` closes the secondary's open conversation).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rules_engine.domain.errors import EventError, NotFoundError
from rules_engine.domain.lifecycle import Lifecycle, Outcome
from rules_engine.domain.message_status import move as move_status
from rules_engine.domain.model import (
    AnyEventType,
    CloseSource,
    CustomEventType,
    Event,
    EventType,
    OpenSource,
    sent_by_bot,
)

MARKDONE = "RB_MARKDONE"
ADD_TAGS = "RB_ADDTAGS"
REMOVE_TAGS = "RB_REMOVETAGS"
BOT_STATUS = "RB_BOTSTATUS"
NOTIFY = "RB_NOTIFY"

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def parse_flag(value: Any) -> bool | None:
    """A boolean parameter as platforms send it: true/false, "true"/"yes"/"1", 1.0...

    None when absent or not recognisable as either.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def parse_tag_list(value: Any) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (blank entries dropped)."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return [str(item).strip() for item in items if str(item).strip()]


Handler = Callable[[Event, int, Lifecycle], list[Outcome]]


def _contact_wrote(event: Event, lifecycle: Lifecycle) -> None:
    if event.channel is not None and event.contact.external_id is not None:
        lifecycle.tx.note_inbound(event.channel, event.contact.external_id, event.timestamp)


def _message_received(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    _contact_wrote(event, lifecycle)
    return [lifecycle.open(contact_id, channel=event.channel,
                           source=OpenSource.INCOMING_MESSAGE, actor=None)]


def _welcome(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    _contact_wrote(event, lifecycle)
    return [lifecycle.open(contact_id, channel=event.channel,
                           source=OpenSource.WELCOME_EVENT, actor=None)]


def _unsubscribed(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    if event.channel is not None and event.contact.external_id is not None:
        lifecycle.tx.note_opt_out(event.channel, event.contact.external_id, event.timestamp)
    return []


def _message_sent(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    return [lifecycle.record_reply(contact_id, by_agent=not sent_by_bot(event.actor))]


def _idle(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    """An idle clock ran out: nothing happens before its rule runs (no built-in line in
    the trace), unless its conversation is no longer open, which the trace then says."""
    conversation = lifecycle.state(contact_id).open_conversation
    if conversation is None or conversation.id != event.conversation_id:
        return [Outcome("idle", False, f"conversation {event.conversation_id} is no longer open")]
    return []


def _no_built_in_effect(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    return []


def _dialogflow(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    _contact_wrote(event, lifecycle)
    params = event.params
    outcomes: list[Outcome] = []
    add_tags = parse_tag_list(params.get(ADD_TAGS))
    if add_tags:
        outcomes.append(lifecycle.add_tags(contact_id, add_tags, event.channel))
    remove_tags = parse_tag_list(params.get(REMOVE_TAGS))
    if remove_tags:
        outcomes.append(lifecycle.remove_tags(contact_id, remove_tags, event.channel))
    bot_status = parse_flag(params.get(BOT_STATUS))
    if bot_status is not None:
        outcomes.append(lifecycle.set_bot_status(contact_id, bot_status, event.channel))
    notify = params.get(NOTIFY)
    if notify not in (None, "", False):
        outcomes.append(Outcome("notify", True, f"notify agents: {notify}"))
    mark_done = parse_flag(params.get(MARKDONE))
    if mark_done is True:
        outcomes.append(lifecycle.close(contact_id, source=CloseSource.DIALOGFLOW,
                                        actor="dialogflow"))
    elif mark_done is False:
        outcomes.append(lifecycle.open(contact_id, channel=event.channel,
                                       source=OpenSource.INCOMING_MESSAGE, actor="dialogflow"))
    return outcomes


def _user_open(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    channel = event.params.get("channel") or lifecycle.contact_channel(contact_id)
    return [lifecycle.open(contact_id, channel=channel,
                           source=OpenSource.USER, actor=event.actor,
                           assignee=event.params.get("assignee"), team=event.params.get("team"))]


def _user_close(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    note = event.params.get("note")
    if event.conversation_id is None:
        return [lifecycle.close(contact_id, source=CloseSource.USER, actor=event.actor, note=note)]
    conversation = lifecycle.conversation(event.conversation_id)
    if conversation is None:
        raise NotFoundError(f"conversation {event.conversation_id} does not exist")
    return [lifecycle.close_conversation(conversation, source=CloseSource.USER,
                                         actor=event.actor, note=note)]


def _merge(event: Event, contact_id: int, lifecycle: Lifecycle) -> list[Outcome]:
    secondary_id = event.secondary_contact_id
    if event.secondary_identity is not None:
        channel, external_id = event.secondary_identity
        secondary = lifecycle.tx.find_contact_by_identity(channel, external_id)
        if secondary is None:
            raise NotFoundError(f"no contact has {channel} id '{external_id}'",
                                path="secondary_contact")
        secondary_id = secondary.id
    if secondary_id is None:
        raise EventError("contacts.merge needs secondary_contact_id or secondary_contact",
                         path="secondary_contact_id")
    return lifecycle.merge(contact_id, secondary_id, actor=event.actor)


# The facts each input's built-in handling may raise before any rule runs (the rules'
# static analysis follows an event's chain through them).
BUILT_IN_FACTS: dict[AnyEventType, frozenset[EventType]] = {
    EventType.MESSAGE_RECEIVED: frozenset({EventType.CONVERSATION_OPENED, EventType.CONTACT_CREATED}),
    EventType.WELCOME: frozenset({EventType.CONVERSATION_OPENED, EventType.CONTACT_CREATED}),
    EventType.MESSAGE_REACTION: frozenset({EventType.CONTACT_CREATED}),
    EventType.MESSAGE_DELETED: frozenset({EventType.CONTACT_CREATED}),
    EventType.DIALOGFLOW_FULFILLMENT: frozenset({
        EventType.CONVERSATION_OPENED, EventType.CONVERSATION_CLOSED, EventType.CONTACT_CREATED,
        EventType.CONTACT_TAG_ADDED, EventType.CONTACT_TAG_REMOVED, EventType.BOT_STATUS_CHANGED}),
    EventType.OPEN_CONVERSATION: frozenset({EventType.CONVERSATION_OPENED}),
    EventType.CLOSE_CONVERSATION: frozenset({EventType.CONVERSATION_CLOSED}),
    EventType.MERGE_CONTACTS: frozenset({EventType.CONTACTS_MERGED, EventType.CONVERSATION_CLOSED}),
}

HANDLERS: dict[EventType, Handler] = {
    EventType.MESSAGE_RECEIVED: _message_received,
    EventType.MESSAGE_SENT: _message_sent,
    EventType.WELCOME: _welcome,
    EventType.CONTACT_UNSUBSCRIBED: _unsubscribed,
    EventType.MESSAGE_REACTION: _no_built_in_effect,
    EventType.MESSAGE_DELETED: _no_built_in_effect,
    EventType.MANUAL: _no_built_in_effect,
    EventType.MESSAGE_DELIVERED: move_status,
    EventType.MESSAGE_READ: move_status,
    EventType.MESSAGE_FAILED: move_status,
    EventType.DIALOGFLOW_FULFILLMENT: _dialogflow,
    EventType.OPEN_CONVERSATION: _user_open,
    EventType.CLOSE_CONVERSATION: _user_close,
    EventType.MERGE_CONTACTS: _merge,
    EventType.CONVERSATION_IDLE: _idle,
    EventType.WAIT_ENDED: _no_built_in_effect,  # the engine resumes the rule itself
    EventType.DATE: _no_built_in_effect,
    EventType.SCHEDULE: _no_built_in_effect,
}


def handler_for(kind: AnyEventType) -> Handler:
    """The built-in handling of an input of ``kind``; a custom event has none (only the
    rules that trigger on it act, so it never opens a conversation by itself)."""
    if isinstance(kind, CustomEventType):
        return _no_built_in_effect
    return HANDLERS[kind]
