"""Durable timers (idle clocks, waits), and replies recorded on conversations.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

from rules_engine.store.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "timers",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("conversation_id", sa.Integer),
        sa.Column("rule_id", sa.String(100), nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("set_by_event", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_index("ix_timers_due_at", "timers", ["due_at"])
    op.create_index("ix_timers_conversation", "timers", ["conversation_id"])
    with op.batch_alter_table("conversations") as table:
        table.add_column(sa.Column("first_response_at", UTCDateTime))
        table.add_column(sa.Column("first_response_seconds", sa.Integer))
        table.add_column(sa.Column("last_reply_at", UTCDateTime))
    op.create_index("ix_conversations_first_response", "conversations",
                    ["first_response_at", "first_response_seconds", "assignee", "team",
                     "channel", "open_source", "close_source"])


def downgrade() -> None:
    op.drop_index("ix_conversations_first_response", "conversations")
    with op.batch_alter_table("conversations") as table:
        table.drop_column("last_reply_at")
        table.drop_column("first_response_seconds")
        table.drop_column("first_response_at")
    op.drop_index("ix_timers_conversation", "timers")
    op.drop_index("ix_timers_due_at", "timers")
    op.drop_table("timers")
