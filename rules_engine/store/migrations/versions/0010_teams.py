"""Balanced assignment: each user's availability and capacity, team membership, and one
row per team holding its rotation; an index of open conversations by assignee.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("availability", sa.String(10), nullable=False,
                                     server_default="available"))
    op.add_column("users", sa.Column("max_open", sa.Integer))
    op.create_table(
        "team_members",
        sa.Column("team", sa.String(100), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    )
    op.create_index("ix_team_members_user", "team_members", ["user_id"])
    op.create_table(
        "team_rotations",
        sa.Column("team", sa.String(100), primary_key=True),
        sa.Column("last_user", sa.String(100)),
    )
    op.create_index("ix_conversations_open_assignee", "conversations", ["assignee"],
                    sqlite_where=sa.text("closed_at IS NULL"),
                    postgresql_where=sa.text("closed_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_conversations_open_assignee", "conversations")
    op.drop_table("team_rotations")
    op.drop_index("ix_team_members_user", "team_members")
    op.drop_table("team_members")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("max_open")
        batch.drop_column("availability")
