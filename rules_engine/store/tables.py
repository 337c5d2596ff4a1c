"""SQLAlchemy Core tables, kept apart from the domain objects."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


NUL_STAND_IN = "\N{SYMBOL FOR NULL}"  # what a NUL character is stored as


def without_nul(text: str) -> str:
    """``text`` with each NUL character (which PostgreSQL's text and JSONB refuse) written
    as the symbol for null, on every database alike."""
    return text.replace("\x00", NUL_STAND_IN) if "\x00" in text else text


class Str(TypeDecorator[str]):
    """A text column that stores any text a platform sends: see ``without_nul``."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else without_nul(value)


class LongStr(Str):
    """``Str`` without a length limit."""

    impl = Text
    cache_ok = True


metadata = MetaData()

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Str(200)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("merged_into", Integer, ForeignKey("contacts.id")),
)

contact_identities = Table(
    "contact_identities",
    metadata,
    Column("channel", Str(40), primary_key=True),
    Column("external_id", Str(200), primary_key=True),
    Column("contact_id", Integer, ForeignKey("contacts.id"), nullable=False, index=True),
    # when the contact last wrote on this identity (the platforms' reply windows), and when
    # they opted out of it (a later message opts them back in)
    Column("last_inbound_at", UTCDateTime),
    Column("opted_out_at", UTCDateTime),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", Integer, ForeignKey("contacts.id"), primary_key=True),
    Column("tag", Str(100), primary_key=True),
)

contact_fields = Table(
    "contact_fields",
    metadata,
    Column("contact_id", Integer, ForeignKey("contacts.id"), primary_key=True),
    Column("name", Str(100), primary_key=True),
    Column("value", JSON().with_variant(JSONB(), "postgresql")),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("contact_id", Integer, ForeignKey("contacts.id"), nullable=False),
    Column("channel", Str(40)),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("open_source", Str(20), nullable=False),
    Column("opened_by", Str(200)),
    Column("closed_at", UTCDateTime),
    # whole seconds from open to close, written once at close: reports sort and bucket it
    # without parsing timestamps (see rules_engine.metrics)
    Column("resolution_seconds", Integer),
    Column("close_source", Str(20)),
    Column("closed_by", Str(200)),
    Column("closing_note", LongStr),
    Column("assignee", Str(200)),
    Column("team", Str(200)),
    Column("bot_active", Boolean, nullable=False, default=True),
    Column("opened_by_event", Str(200)),
    Column("closed_by_event", Str(200)),
    # the first reply from an agent (message.sent) after the open, and the latest reply
    Column("first_response_at", UTCDateTime),
    Column("first_response_seconds", Integer),
    Column("last_reply_at", UTCDateTime),
)

# The invariant of the product document, held by the database itself: at most one
# open conversation per contact, whatever the number of threads or processes.
ONE_OPEN_PER_CONTACT = Index(
    "uq_conversations_one_open_per_contact",
    conversations.c.contact_id,
    unique=True,
    sqlite_where=conversations.c.closed_at.is_(None),
    postgresql_where=conversations.c.closed_at.is_(None),
)
Index("ix_conversations_contact_opened", conversations.c.contact_id, conversations.c.opened_at)
# Covers every report query (range on closed_at, any slice): reports scan this index only.
Index("ix_conversations_report", conversations.c.closed_at, conversations.c.resolution_seconds,
      conversations.c.assignee, conversations.c.team, conversations.c.channel,
      conversations.c.open_source, conversations.c.close_source)

# A user's open conversations, counted against their capacity.
Index("ix_conversations_open_assignee", conversations.c.assignee,
      sqlite_where=conversations.c.closed_at.is_(None),
      postgresql_where=conversations.c.closed_at.is_(None))

# Covers first-response reports (range on first_response_at, any slice).
Index("ix_conversations_first_response", conversations.c.first_response_at,
      conversations.c.first_response_seconds, conversations.c.assignee, conversations.c.team,
      conversations.c.channel, conversations.c.open_source, conversations.c.close_source)

# Report rollups (rules_engine.store.rollups): per measure ("resolution", "first_response"),
# UTC day and slice value, the durations counted there: count, sum, the report's
# distribution buckets and a quantile sketch (rules_engine.domain.durations), as little-endian
# 32-bit counts; ``sketch`` holds the counts of the sketch's buckets from ``sketch_offset``.
# ``keyed`` is false for the slice value "none" (a key column cannot hold NULL).
report_rollups = Table(
    "report_rollups",
    metadata,
    Column("measure", String(20), primary_key=True),
    Column("dimension", String(20), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("keyed", Boolean, primary_key=True),
    Column("key", Str(200), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("seconds", BigInteger, nullable=False),
    Column("buckets", LargeBinary, nullable=False),
    Column("sketch_offset", Integer, nullable=False),
    Column("sketch", LargeBinary, nullable=False),
)

# Durable timers: an idle clock per (idle rule, conversation), a wait per (event, rule,
# action), a date per (date rule, contact), written in the transaction of the event that set
# them; a schedule per schedule rule (contact 0: none), set by the first tick that sees it;
# all fired by `tick`/`worker`.
timers = Table(
    "timers",
    metadata,
    Column("id", Str(300), primary_key=True),  # deterministic, see rules_engine.domain.timers
    Column("kind", Str(10), nullable=False),  # "idle", "wait", "date" or "schedule"
    Column("contact_id", Integer, nullable=False),
    Column("conversation_id", Integer),  # closing it drops the timer
    Column("rule_id", Str(100), nullable=False),
    Column("due_at", UTCDateTime, nullable=False, index=True),
    Column("set_by_event", Str(200), nullable=False),
    Column("payload", JSON, nullable=False),
)
Index("ix_timers_conversation", timers.c.conversation_id)

processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", Str(200), primary_key=True),
    Column("type", Str(60), nullable=False),
    Column("channel", Str(40)),
    Column("contact_id", Integer),
    Column("received_at", UTCDateTime, nullable=False),
)

# Internal notes on conversations (the add_note action): for the agents, never sent.
conversation_notes = Table(
    "conversation_notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("conversation_id", Integer, ForeignKey("conversations.id"), nullable=False),
    Column("text", LongStr, nullable=False),
    Column("author", Str(200), nullable=False),  # rule '<id>', or a user
    Column("created_at", UTCDateTime, nullable=False),
    Column("event_id", Str(200)),
)
Index("ix_conversation_notes_conversation", conversation_notes.c.conversation_id,
      conversation_notes.c.id)
Index("ix_conversation_notes_created", conversation_notes.c.created_at)

event_traces = Table(
    "event_traces",
    metadata,
    Column("event_id", Str(200), ForeignKey("processed_events.event_id"), primary_key=True),
    Column("recorded_at", UTCDateTime, nullable=False, index=True),
    Column("trace", JSON, nullable=False),
)

# Once per rule-set version: the rules' files, lines, priorities, condition texts and action
# arguments, which stored traces name by id and path instead of repeating (trace_format).
rule_sets = Table(
    "rule_sets",
    metadata,
    Column("version", Str(40), primary_key=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("catalog", JSON, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Str(200), nullable=False),
    Column("rule_id", Str(100)),
    Column("action", Str(40), nullable=False),
    Column("target", Str(40), nullable=False),
    Column("channel", Str(40)),  # a message's (None for a rule's http_request)
    Column("contact_id", Integer),  # the contact a message goes to
    Column("recipient", Str(200)),
    Column("url", LongStr),
    Column("method", Str(10), nullable=False),
    Column("headers", JSON, nullable=False),
    Column("body", JSON),
    # stable per row: receivers drop the rare repeat that at-least-once delivery allows
    Column("idempotency_key", Str(100), nullable=False, unique=True),
    Column("status", Str(20), nullable=False),  # model.OutboxStatus
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_expires_at", UTCDateTime),
    Column("locked_by", Str(100)),
    Column("platform_message_id", Str(200)),  # wamid, mid, message_id, message_token
    # the latest failure: kind (connectors.channels.base.AnswerKind, or ours: outside_window,
    # opted_out, retries_exhausted...), the platform's own code and words
    Column("error_kind", Str(20)),
    Column("error_code", Str(40)),
    Column("error_message", LongStr),
    Column("created_at", UTCDateTime, nullable=False),
    Column("queued_at", UTCDateTime, nullable=False),  # created, or retried by an operator
    Column("sent_at", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("read_at", UTCDateTime),
)
Index("ix_outbox_due", outbox.c.status, outbox.c.next_attempt_at)
Index("ix_outbox_platform_message", outbox.c.channel, outbox.c.platform_message_id)
Index("ix_outbox_recipient", outbox.c.channel, outbox.c.recipient)

# Channels whose send API refused our credential: no calls until an operator resumes them.
channel_pauses = Table(
    "channel_pauses",
    metadata,
    Column("channel", Str(40), primary_key=True),
    Column("paused_at", UTCDateTime, nullable=False),
    Column("code", Str(40)),
    Column("message", LongStr, nullable=False),
)

# Pacing shared by every worker: the earliest time of the next call per key (a channel, or
# a channel and a recipient).
outbound_pace = Table(
    "outbound_pace",
    metadata,
    Column("key", Str(300), primary_key=True),
    Column("next_at", UTCDateTime, nullable=False),
)

# Delivery attempts by channel ("" for rules' URLs) and outcome, counted by every worker.
outbound_deliveries = Table(
    "outbound_deliveries",
    metadata,
    Column("channel", Str(40), primary_key=True),
    Column("outcome", Str(30), primary_key=True),
    Column("count", Integer, nullable=False),
)

# What the engine did outside the web app's processes (timer firings, the delivery
# worker's message.failed: rules_engine.trace.counts), counted in the transaction that did
# it, for /metrics: one row per source, metric and label values (a JSON list).
engine_counts = Table(
    "engine_counts",
    metadata,
    Column("source", Str(20), primary_key=True),
    Column("metric", Str(40), primary_key=True),
    Column("labels", Str(400), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# Run-once and cooldown bookkeeping: one row per rule and scope (a contact or a conversation).
rule_runs = Table(
    "rule_runs",
    metadata,
    Column("rule_id", Str(100), primary_key=True),
    Column("scope", Str(100), primary_key=True),
    Column("last_fired_at", UTCDateTime, nullable=False),
)

# People (rules_engine.people): users with a role and the digest of their API token, their
# dashboard sessions (the digest of the cookie's random value), failed sign-ins per address.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Str(100), nullable=False, unique=True),
    Column("role", Str(10), nullable=False),
    Column("token_digest", Str(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    # balanced assignment: whether they take new conversations, and how many open at most
    Column("availability", Str(10), nullable=False, server_default="available"),
    Column("max_open", Integer),
)

# Balanced assignment: who is on which team, and one row per team holding its rotation
# (whom it last gave a conversation), locked while a conversation is given out.
team_members = Table(
    "team_members",
    metadata,
    Column("team", Str(100), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True),
)
Index("ix_team_members_user", team_members.c.user_id)

team_rotations = Table(
    "team_rotations",
    metadata,
    Column("team", Str(100), primary_key=True),
    Column("last_user", Str(100)),
)

sessions = Table(
    "sessions",
    metadata,
    Column("digest", Str(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_sessions_user", sessions.c.user_id)

sign_in_failures = Table(
    "sign_in_failures",
    metadata,
    Column("address", Str(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", UTCDateTime, nullable=False),
)
