"""Outbound that knows the platforms: each outbox row names its channel and contact, keeps
the platform's message id and the platform's own error (kind, code, message), and goes
``pending`` -> ``sent`` -> ``delivered`` -> ``read``, or ``failed`` / ``suppressed``.

Rows that were ``delivered`` only meant that the platform accepted the call: they become
``sent`` (their ``delivered_at`` becomes ``sent_at``); a ``last_error`` becomes the error's
message. Contact identities learn when the contact last wrote and whether they opted out;
channels can be paused; the workers share their pacing and their delivery counts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

from rules_engine.store.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

outbox = sa.table("outbox", sa.column("id", sa.Integer), sa.column("status", sa.String),
                  sa.column("target", sa.String), sa.column("body", sa.JSON),
                  sa.column("channel", sa.String), sa.column("last_error", sa.Text),
                  sa.column("error_kind", sa.String), sa.column("error_message", sa.Text),
                  sa.column("created_at", sa.DateTime), sa.column("queued_at", sa.DateTime))


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("delivered_at", new_column_name="sent_at")
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("channel", sa.String(40)))
        batch.add_column(sa.Column("contact_id", sa.Integer))
        batch.add_column(sa.Column("platform_message_id", sa.String(200)))
        batch.add_column(sa.Column("error_kind", sa.String(20)))
        batch.add_column(sa.Column("error_code", sa.String(40)))
        batch.add_column(sa.Column("error_message", sa.Text))
        batch.add_column(sa.Column("delivered_at", UTCDateTime))
        batch.add_column(sa.Column("read_at", UTCDateTime))
        batch.add_column(sa.Column("queued_at", UTCDateTime))
    bind = op.get_bind()
    for row in bind.execute(sa.select(outbox.c.id, outbox.c.body)
                            .where(outbox.c.target == "message")).all():
        channel = row.body.get("channel") if isinstance(row.body, dict) else None
        bind.execute(outbox.update().where(outbox.c.id == row.id).values(channel=channel))
    op.execute(outbox.update().where(outbox.c.status == "delivered").values(status="sent"))
    op.execute(outbox.update().where(outbox.c.last_error.is_not(None)).values(
        error_message=outbox.c.last_error,
        error_kind=sa.case((outbox.c.status == "failed", "permanent"), else_="transient")))
    op.execute(outbox.update().values(queued_at=outbox.c.created_at))
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("last_error")
        batch.alter_column("queued_at", existing_type=UTCDateTime, nullable=False)
    op.create_index("ix_outbox_platform_message", "outbox", ["channel", "platform_message_id"])
    op.create_index("ix_outbox_recipient", "outbox", ["channel", "recipient"])
    with op.batch_alter_table("contact_identities") as batch:
        batch.add_column(sa.Column("last_inbound_at", UTCDateTime))
        batch.add_column(sa.Column("opted_out_at", UTCDateTime))
    op.create_table(
        "channel_pauses",
        sa.Column("channel", sa.String(40), primary_key=True),
        sa.Column("paused_at", UTCDateTime, nullable=False),
        sa.Column("code", sa.String(40)),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "outbound_pace",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("next_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "outbound_deliveries",
        sa.Column("channel", sa.String(40), primary_key=True),
        sa.Column("outcome", sa.String(30), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbound_deliveries")
    op.drop_table("outbound_pace")
    op.drop_table("channel_pauses")
    with op.batch_alter_table("contact_identities") as batch:
        batch.drop_column("opted_out_at")
        batch.drop_column("last_inbound_at")
    op.drop_index("ix_outbox_recipient", "outbox")
    op.drop_index("ix_outbox_platform_message", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("last_error", sa.Text))
    op.execute(outbox.update().values(last_error=outbox.c.error_message))
    op.execute(outbox.update().where(outbox.c.status.in_(("sent", "read")))
               .values(status="delivered"))
    op.execute(outbox.update().where(outbox.c.status == "suppressed").values(status="failed"))
    with op.batch_alter_table("outbox") as batch:
        for column in ("queued_at", "read_at", "delivered_at", "error_message", "error_code", "error_kind",
                       "platform_message_id", "contact_id", "channel"):
            batch.drop_column(column)
        batch.alter_column("sent_at", new_column_name="delivered_at")
