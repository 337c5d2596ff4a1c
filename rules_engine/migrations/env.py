"""Alembic environment: migrations run on the connection the Store hands over."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from rules_engine.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # plain `alembic` use: connect to the configured URL
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
