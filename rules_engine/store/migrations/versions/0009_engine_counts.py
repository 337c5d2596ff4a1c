"""What the engine did outside the web app's processes (timer firings, the delivery
worker's message.failed), counted for /metrics in the transaction that did it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "engine_counts",
        sa.Column("source", sa.String(20), primary_key=True),
        sa.Column("metric", sa.String(40), primary_key=True),
        sa.Column("labels", sa.String(400), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("engine_counts")
