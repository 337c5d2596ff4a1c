"""Internal notes on conversations (the add_note action).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("conversation_id", sa.Integer, sa.ForeignKey("conversations.id"),
                  nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(200)),
    )
    op.create_index("ix_conversation_notes_conversation", "conversation_notes",
                    ["conversation_id", "id"])
    op.create_index("ix_conversation_notes_created", "conversation_notes", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_conversation_notes_created", "conversation_notes")
    op.drop_index("ix_conversation_notes_conversation", "conversation_notes")
    op.drop_table("conversation_notes")
