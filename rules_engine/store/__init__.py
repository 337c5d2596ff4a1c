"""Persistence: SQLAlchemy Core tables, the repository, and the unit of work."""
from .repository import StoreTx
from .store import DATABASE_ERRORS, DEFAULT_DATABASE_URL, Store, StoreNotReady

__all__ = ["DATABASE_ERRORS", "DEFAULT_DATABASE_URL", "Store", "StoreNotReady", "StoreTx"]
