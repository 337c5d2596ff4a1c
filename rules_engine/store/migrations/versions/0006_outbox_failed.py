"""Outbox rows that will not be tried again are ``failed`` (they were ``dead``).

Their ``last_error`` stays as the reason.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

outbox = sa.table("outbox", sa.column("status", sa.String))


def _rename(old: str, new: str) -> None:
    op.execute(outbox.update().where(outbox.c.status == old).values(status=new))


def upgrade() -> None:
    _rename("dead", "failed")


def downgrade() -> None:
    _rename("failed", "dead")
