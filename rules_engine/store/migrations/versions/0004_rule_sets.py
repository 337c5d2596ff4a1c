"""Rule-set catalogs: what every stored trace of a rule-set version would repeat.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

from rules_engine.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_sets",
        sa.Column("version", sa.String(40), primary_key=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("catalog", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rule_sets")
