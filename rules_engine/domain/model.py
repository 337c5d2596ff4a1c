"""Domain objects: events, contacts, conversations, and the names of sources and event types."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

MAX_ID = 2_147_483_647  # ids of contacts, conversations, outbox rows: the databases' INTEGER


class OpenSource(StrEnum):
    """The four ways a conversation opens (product document, "Opening a Conversation")."""

    INCOMING_MESSAGE = "incoming_message"
    USER = "user"
    AUTOMATION = "automation"
    WELCOME_EVENT = "welcome_event"


class CloseSource(StrEnum):
    """The four ways a conversation closes (product document, "Closing a Conversation")."""

    USER = "user"
    AUTOMATION = "automation"
    DIALOGFLOW = "dialogflow"
    CONTACT_MERGE = "contact_merge"


class OutboxStatus(StrEnum):
    """Where an outbound call stands. ``pending`` until the platform accepts it (``sent``,
    its message id kept); then ``delivered`` and ``read`` as the platform's status callbacks
    report them. ``failed`` when trying again cannot help (the platform's reason, or ours:
    outside the reply window, retries exhausted); ``suppressed`` when it was never called
    (the contact opted out)."""

    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


# The statuses a row may be sent again from (an operator's retry), and those a platform's
# status callback may move a row on from, by the status it reports (never back).
RETRYABLE_STATUSES = (OutboxStatus.FAILED, OutboxStatus.SUPPRESSED)
MOVES_FROM = {
    OutboxStatus.DELIVERED: (OutboxStatus.SENT,),
    OutboxStatus.READ: (OutboxStatus.SENT, OutboxStatus.DELIVERED),
    OutboxStatus.FAILED: (OutboxStatus.SENT, OutboxStatus.DELIVERED),
}


class EventType(StrEnum):
    """Every event the engine knows.

    Inputs arrive from outside (channels, Dialogflow, the users' API); facts are emitted
    by the engine when state changes. Rules may trigger on inputs and facts, never on
    the users' commands (``conversation.open``, ``conversation.close``, ``contacts.merge``).
    """

    # inputs that rules can trigger on
    MESSAGE_RECEIVED = "message.received"
    MESSAGE_SENT = "message.sent"  # an agent's or bot's reply (e.g. a page's echo); never opens
    WELCOME = "welcome"
    DIALOGFLOW_FULFILLMENT = "dialogflow.fulfillment"
    CONTACT_UNSUBSCRIBED = "contact.unsubscribed"  # the contact opted out / blocked the bot
    # the contact reacted to a message (params.emoji, params.message_id), or a message was
    # deleted (params.message_id): neither opens a conversation nor restarts an idle clock
    MESSAGE_REACTION = "message.reaction"
    MESSAGE_DELETED = "message.deleted"
    # what became of a message we sent (a platform's status callback, or the outbox worker):
    # params name the platform's message id (or a watermark), the outbox row, and the error
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_READ = "message.read"
    MESSAGE_FAILED = "message.failed"
    # a person runs a rule whose trigger is ``manual`` on one contact (params.rule_id; actor:
    # who ran it): an input from the users' API or the command line, and that rule's trigger
    MANUAL = "manual"
    # the users' commands (inputs, not triggers)
    OPEN_CONVERSATION = "conversation.open"
    CLOSE_CONVERSATION = "conversation.close"
    MERGE_CONTACTS = "contacts.merge"
    # facts emitted by the engine
    CONVERSATION_OPENED = "conversation.opened"
    CONVERSATION_CLOSED = "conversation.closed"
    CONVERSATION_ASSIGNED = "conversation.assigned"
    CONVERSATION_UNASSIGNED = "conversation.unassigned"  # params: who and which team it had
    # a balanced assign found nobody free: it stays with params.team (params.reason says why)
    CONVERSATION_UNASSIGNABLE = "conversation.unassignable"
    CONTACT_CREATED = "contact.created"
    CONTACTS_MERGED = "contacts.merged"
    CONTACT_TAG_ADDED = "contact.tag_added"
    CONTACT_TAG_REMOVED = "contact.tag_removed"
    CONTACT_FIELD_SET = "contact.field_set"
    BOT_STATUS_CHANGED = "conversation.bot_status_changed"
    # fired by durable timers (``rules-engine tick`` / ``worker``)
    CONVERSATION_IDLE = "conversation.idle"  # an idle rule's clock ran out; rules trigger on it
    WAIT_ENDED = "wait.ended"  # a rule's ``wait`` is over: the rest of its actions run
    # a date rule's day and time came for one contact (params.field, params.date)
    DATE = "date"
    # a schedule rule's cron time came: it runs for each contact it applies to (params.due)
    SCHEDULE = "schedule"


COMMAND_TYPES = frozenset(
    {EventType.OPEN_CONVERSATION, EventType.CLOSE_CONVERSATION, EventType.MERGE_CONTACTS}
)
CHANNEL_INPUT_TYPES = frozenset(
    {EventType.MESSAGE_RECEIVED, EventType.MESSAGE_SENT, EventType.WELCOME,
     EventType.DIALOGFLOW_FULFILLMENT, EventType.CONTACT_UNSUBSCRIBED,
     EventType.MESSAGE_REACTION, EventType.MESSAGE_DELETED}
)
MESSAGE_STATUS_TYPES = frozenset(
    {EventType.MESSAGE_DELIVERED, EventType.MESSAGE_READ, EventType.MESSAGE_FAILED})
INPUT_TYPES = CHANNEL_INPUT_TYPES | MESSAGE_STATUS_TYPES | COMMAND_TYPES | {EventType.MANUAL}
# inputs that people issue: they name contacts that exist, and say who issued them (actor)
ISSUED_TYPES = COMMAND_TYPES | {EventType.MANUAL}
TRIGGER_TYPES = frozenset(EventType) - COMMAND_TYPES - {EventType.WAIT_ENDED}
# events that run the one rule they name (params.rule_id), never every rule on their type:
# an idle clock, a date or a schedule belongs to one rule; a person runs one rule
ONE_RULE_TYPES = frozenset(
    {EventType.CONVERSATION_IDLE, EventType.MANUAL, EventType.DATE, EventType.SCHEDULE})

CUSTOM_PREFIX = "custom."
CUSTOM_NAME = re.compile(r"^custom\.[a-z][a-z0-9_]{0,63}$")


class CustomEventType(str):
    """A ``custom.<name>`` event: posted by another system or emitted by a rule's ``emit``.

    Its text is the whole type (``custom.order_shipped``), so it travels wherever an
    ``EventType`` does (traces, counts, the rule index) and compares equal to its text.
    It has no built-in effect: only the rules that trigger on it act.
    """

    __slots__ = ()

    def __new__(cls, text: str) -> CustomEventType:
        if not CUSTOM_NAME.match(text):
            raise ValueError(f"'{text}' is not custom.<name> (lower case, digits, _)")
        return super().__new__(cls, text)


AnyEventType = EventType | CustomEventType


def event_type(text: str) -> AnyEventType:
    """The event type named ``text``: a known one, or ``custom.<name>``; ValueError else."""
    if text.startswith(CUSTOM_PREFIX):
        return CustomEventType(text)
    return EventType(text)


def is_trigger(kind: AnyEventType) -> bool:
    """Whether rules may trigger on events of ``kind`` (custom events always)."""
    return isinstance(kind, CustomEventType) or kind in TRIGGER_TYPES


def sent_by_bot(actor: str | None) -> bool:
    """Whether a reply (``message.sent``) came from a bot or an app rather than an agent:
    its actor is ``bot`` or starts with ``bot:`` or ``app:`` (as Messenger's echoes of an
    app's messages do). Every other reply is an agent's."""
    return actor is not None and (actor == "bot" or actor.startswith(("bot:", "app:")))


@dataclass(frozen=True, slots=True)
class ContactRef:
    """How an event names its contact: the platform id, or a channel identity."""

    id: int | None = None
    external_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """The message an event carries, in the same shape whatever the channel.

    ``attachments`` are mappings with a ``type`` (``image``, ``video``, ``audio``, ``file``,
    ``sticker``, ``location``, ``contact``, ``link``, ``other``) and, where the channel gives
    them, ``url``, ``latitude`` / ``longitude``, ``title``, ``mime_type``.
    """

    text: str = ""
    id: str | None = None
    quick_reply: str | None = None  # the payload of a tapped quick reply
    postback: str | None = None  # the payload of a tapped button or list item
    attachments: tuple[Mapping[str, Any], ...] = ()
    reply_to: str | None = None  # the id of the message this one answers
    edited: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The message as conditions and traces see it."""
        return {"id": self.id, "text": self.text, "quick_reply": self.quick_reply,
                "postback": self.postback, "attachments": [dict(a) for a in self.attachments],
                "reply_to": self.reply_to, "edited": self.edited}


@dataclass(frozen=True, slots=True)
class Event:
    """One incoming event, already parsed and validated (see ``rules_engine.formats.events``)."""

    id: str
    type: AnyEventType
    channel: str | None  # None: a command or a timer firing that names no channel
    contact: ContactRef
    timestamp: datetime
    message: Message | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    intent: Mapping[str, Any] | None = None
    actor: str | None = None
    via: str | None = None  # who issued a command on the actor's behalf (see the event schema)
    conversation_id: int | None = None
    secondary_contact_id: int | None = None
    secondary_identity: tuple[str, str] | None = None  # (channel, external_id)


@dataclass(frozen=True, slots=True)
class Contact:
    """A person who talks to the platform."""

    id: int
    name: str | None
    created_at: datetime
    merged_into: int | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """One interaction with one context; at most one is open per contact."""

    id: int
    contact_id: int
    channel: str | None
    opened_at: datetime
    open_source: OpenSource
    opened_by: str | None
    closed_at: datetime | None = None
    close_source: CloseSource | None = None
    closed_by: str | None = None
    closing_note: str | None = None
    assignee: str | None = None
    team: str | None = None
    bot_active: bool = True
    first_response_at: datetime | None = None  # the first agent's reply after the open
    last_reply_at: datetime | None = None  # the latest reply (message.sent) on it

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def status(self) -> str:
        return "open" if self.is_open else "closed"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the CLI and the API."""
        return {
            "id": self.id,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "status": self.status,
            "open_source": str(self.open_source),
            "close_source": str(self.close_source) if self.close_source else None,
            "opened_at": self.opened_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "opened_by": self.opened_by,
            "closed_by": self.closed_by,
            "closing_note": self.closing_note,
            "assignee": self.assignee,
            "team": self.team,
            "bot_active": self.bot_active,
            "first_response_at": self.first_response_at.isoformat() if self.first_response_at else None,
            "last_reply_at": self.last_reply_at.isoformat() if self.last_reply_at else None,
        }
