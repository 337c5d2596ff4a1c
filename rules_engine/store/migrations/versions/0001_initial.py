"""The initial schema: contacts, identities, tags, fields, conversations, events, traces.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from rules_engine.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("merged_into", sa.Integer, sa.ForeignKey("contacts.id")),
    )
    op.create_table(
        "contact_identities",
        sa.Column("channel", sa.String(40), primary_key=True),
        sa.Column("external_id", sa.String(200), primary_key=True),
        sa.Column("contact_id", sa.Integer, sa.ForeignKey("contacts.id"), nullable=False),
    )
    op.create_index("ix_contact_identities_contact_id", "contact_identities", ["contact_id"])
    op.create_table(
        "contact_tags",
        sa.Column("contact_id", sa.Integer, sa.ForeignKey("contacts.id"), primary_key=True),
        sa.Column("tag", sa.String(100), primary_key=True),
    )
    op.create_table(
        "contact_fields",
        sa.Column("contact_id", sa.Integer, sa.ForeignKey("contacts.id"), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.JSON().with_variant(JSONB(), "postgresql")),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("contact_id", sa.Integer, sa.ForeignKey("contacts.id"), nullable=False),
        sa.Column("channel", sa.String(40)),
        sa.Column("opened_at", UTCDateTime, nullable=False),
        sa.Column("open_source", sa.String(20), nullable=False),
        sa.Column("opened_by", sa.String(200)),
        sa.Column("closed_at", UTCDateTime),
        sa.Column("resolution_seconds", sa.Integer),
        sa.Column("close_source", sa.String(20)),
        sa.Column("closed_by", sa.String(200)),
        sa.Column("closing_note", sa.Text),
        sa.Column("assignee", sa.String(200)),
        sa.Column("team", sa.String(200)),
        sa.Column("bot_active", sa.Boolean, nullable=False),
        sa.Column("opened_by_event", sa.String(200)),
        sa.Column("closed_by_event", sa.String(200)),
    )
    op.create_index("uq_conversations_one_open_per_contact", "conversations", ["contact_id"],
                    unique=True, sqlite_where=sa.text("closed_at IS NULL"),
                    postgresql_where=sa.text("closed_at IS NULL"))
    op.create_index("ix_conversations_contact_opened", "conversations", ["contact_id", "opened_at"])
    op.create_index("ix_conversations_report", "conversations",
                    ["closed_at", "resolution_seconds", "assignee", "team", "channel",
                     "open_source", "close_source"])
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(60), nullable=False),
        sa.Column("channel", sa.String(40)),
        sa.Column("contact_id", sa.Integer),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "event_traces",
        sa.Column("event_id", sa.String(200), sa.ForeignKey("processed_events.event_id"),
                  primary_key=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("trace", sa.JSON, nullable=False),
    )
    op.create_index("ix_event_traces_recorded_at", "event_traces", ["recorded_at"])


def downgrade() -> None:
    for table in ("event_traces", "processed_events", "conversations", "contact_fields",
                  "contact_tags", "contact_identities", "contacts"):
        op.drop_table(table)
