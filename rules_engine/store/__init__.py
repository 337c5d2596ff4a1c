"""Persistence: SQLAlchemy Core tables, the repository, and the unit of work."""
from rules_engine.store.repository import StoreTx
from rules_engine.store.store import (
    DATABASE_ERRORS,
    DEFAULT_DATABASE_URL,
    Store,
    StoreNotReady,
    database_url,
)

__all__ = ["DATABASE_ERRORS", "DEFAULT_DATABASE_URL", "Store", "StoreNotReady", "StoreTx",
           "database_url"]
