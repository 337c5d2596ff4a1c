"""Run-once and cooldown bookkeeping for rules.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

from rules_engine.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_runs",
        sa.Column("rule_id", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(100), primary_key=True),
        sa.Column("last_fired_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rule_runs")
