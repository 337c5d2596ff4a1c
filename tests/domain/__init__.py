"""Unit tests of the domain, on the in-memory store (no database, no SQLAlchemy)."""
