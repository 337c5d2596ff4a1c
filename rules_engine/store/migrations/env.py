"""Alembic environment: migrations run on the connection the Store hands over."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from rules_engine.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # plain `alembic` use: connect to the configured URL
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("set sqlalchemy.url in the Alembic configuration")
    engine = create_engine(url)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
