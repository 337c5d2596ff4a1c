"""Report rollups: per measure, UTC day and slice value, the durations counted there, kept
in the transaction of each change (rules_engine.store.rollups); filled here from the
conversations already stored.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

from rules_engine.store.rollups import rebuild

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_rollups",
        sa.Column("measure", sa.String(20), primary_key=True),
        sa.Column("dimension", sa.String(20), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("keyed", sa.Boolean, primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.BigInteger, nullable=False),
        sa.Column("buckets", sa.LargeBinary, nullable=False),
        sa.Column("sketch_offset", sa.Integer, nullable=False),
        sa.Column("sketch", sa.LargeBinary, nullable=False),
    )
    bind = op.get_bind()
    rebuild(bind, bind.dialect.name)


def downgrade() -> None:
    op.drop_table("report_rollups")
