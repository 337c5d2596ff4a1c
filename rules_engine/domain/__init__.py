"""The domain: contacts, conversations and their lifecycle, the built-in handling of each
incoming event, timers, and the port (``ports.DomainStore``) through which the domain reaches
storage. Imports nothing from the store, SQLAlchemy or Alembic."""
