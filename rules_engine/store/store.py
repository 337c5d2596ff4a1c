"""The store: a SQLAlchemy engine, and a unit of work whose effects commit together or not at all."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

from rules_engine.domain.errors import EventError, RulesEngineError
from rules_engine.store.prepared import execute_on_driver
from rules_engine.store.repository import ConversationRace, StoreTx
from rules_engine.store.tables import without_nul
from rules_engine.store.writer_lock import WriterLock

log = logging.getLogger(__name__)
DEFAULT_DATABASE_URL = "sqlite:///rules-engine.db"
# What the database raises (transient conflicts included): never the input's fault.
DATABASE_ERRORS = (DBAPIError, ConversationRace)
# The newest migration (rules_engine/store/migrations/versions); a test holds it to Alembic's head.
# Knowing it here lets a store at that revision open without importing Alembic (a tenth
# of a second, a large part of a short command's start).
SCHEMA_REVISION = "0012"
T = TypeVar("T")


def database_url(given: str | None = None) -> str:
    """``given``, else ``$RULES_ENGINE_DATABASE_URL``, else the SQLite default."""
    return given or os.environ.get("RULES_ENGINE_DATABASE_URL") or DEFAULT_DATABASE_URL


def _compact_json(value: Any) -> str:
    """JSON columns without the spaces after separators (traces are a tenth smaller),
    written by orjson (about ten times faster than ``json``); what orjson refuses but
    ``json`` writes (a lone surrogate escape, an integer beyond 64 bits) by ``json``. A NUL
    character, which PostgreSQL's JSONB refuses, is stored as ``tables.without_nul`` says."""
    text = _dumps(value)
    if "\\u0000" in text:  # a NUL, or a text that reads \u0000: rare, so checked only then
        text = _dumps(_without_nul_strings(value))
    return text


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":"))


def _without_nul_strings(value: Any) -> Any:
    """``value`` with every string in it (keys too) passed through ``without_nul``."""
    if isinstance(value, str):
        return without_nul(value)
    if isinstance(value, dict):
        return {_without_nul_strings(key): _without_nul_strings(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul_strings(item) for item in value]
    return value


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a generous busy timeout, foreign keys, and write transactions that take the
    write lock at BEGIN (so two writers queue instead of failing on lock upgrade). The WAL
    is checkpointed every 10,000 pages (40 MB) instead of 1,000: an event's pages are
    mostly the same hot pages, so a checkpoint writes each once for many events (ingest
    and the sqlite3 floor, which uses the same pragma, both gained about 5%)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA wal_autocheckpoint=10000")  # pages; see the docstring
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get("read_only", False)
        # on the driver itself: SQLAlchemy's execution path costs more than the BEGIN
        execute_on_driver(connection, "BEGIN" if read_only else "BEGIN IMMEDIATE")


_TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def _is_transient(error: OperationalError | ConversationRace) -> bool:
    if isinstance(error, ConversationRace):
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate in _TRANSIENT_SQLSTATES or "database is locked" in str(error.orig)


@contextlib.contextmanager
def _values_that_fit() -> Iterator[None]:
    """A value the database cannot hold (a text longer than its column or with a NUL, a
    number out of its range) is an EventError: the input was wrong, nothing was written."""
    try:
        yield
    except DataError as error:  # the database's own words go to the log, never the caller
        log.warning("a value does not fit the database: %s", error.orig)
        raise EventError("a value does not fit the database (a text longer than its column, "
                         "or a number out of range)",
                         hint="shorten the text or use a smaller number") from None


class StoreNotReady(RulesEngineError):
    """The database's schema is not at the version this code needs."""


class Store:
    """Owns the database engine and hands out units of work (``transaction()``).

    The schema is managed by Alembic migrations (``rules_engine/store/migrations``). The embedded
    SQLite default is migrated when opened; a PostgreSQL database is migrated by
    ``rules-engine db upgrade`` and only checked here.
    """

    def __init__(self, url: str = DEFAULT_DATABASE_URL, *, migrate: bool | None = None,
                 verify: bool = True) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        options: dict[str, Any] = {}
        if self.dialect == "sqlite":
            database = self.url.database or ""
            if database in ("", ":memory:"):
                options["poolclass"] = StaticPool
                options["connect_args"] = {"check_same_thread": False}
            else:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                options["connect_args"] = {"check_same_thread": False, "timeout": 30}
                options["pool_size"] = 10
                options["max_overflow"] = 40
                options["pool_timeout"] = 60
        else:
            options["pool_size"] = 10
            options["max_overflow"] = 20
            options["pool_pre_ping"] = True
        self.engine = create_engine(self.url, json_serializer=_compact_json, **options)
        self._writer: WriterLock | None = None  # SQLite files: writers queue on the OS
        self._idle: list[Connection] | None = None  # SQLite files: see _kept_connection
        self._idle_pid = os.getpid()
        if self.dialect == "sqlite" and (self.url.database or "") not in ("", ":memory:"):
            self._writer = WriterLock(Path(self.url.database or ""))
            self._idle = []
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        if self.dialect == "sqlite" if migrate is None else migrate:
            self.upgrade()
        elif verify:
            self.check_schema()

    @staticmethod
    def missing_file(url: str) -> str | None:
        """The SQLite file ``url`` names, when it is not there (None when it is, or when
        ``url`` names no SQLite file)."""
        parsed = make_url(url)
        database = parsed.database or ""
        if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") \
                and not Path(database).is_file():
            return database
        return None

    @classmethod
    def open_existing(cls, url: str) -> Store:
        """A store that must already exist (for commands that only read): a SQLite file that
        is not there is an error, never a new empty database (or a new folder)."""
        missing = cls.missing_file(url)
        if missing is not None:
            raise StoreNotReady(f"no database at {missing}",
                                hint="run this command where the database is, pass "
                                     "--database-url, or create it with `rules-engine ingest`")
        return cls(url)

    @classmethod
    def from_env(cls, url: str | None = None) -> Store:
        """A store for ``database_url(url)``."""
        return cls(database_url(url))

    def _alembic(self, connection: Connection) -> Any:
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", "rules_engine.store:migrations")
        config.attributes["connection"] = connection
        return config

    def _current_revision(self) -> str | None:
        """The database's schema revision (None: not migrated at all), read without Alembic."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision`` (all of them by default); one INFO line
        says what changed."""
        before = self._current_revision()
        if revision == "head" and before == SCHEMA_REVISION:
            return
        from alembic import command

        with self.engine.begin() as connection:
            command.upgrade(self._alembic(connection), revision)
        after = self._current_revision()
        if after != before:
            log.info("the database schema of %s went from revision %s to %s",
                     self.url.render_as_string(hide_password=True), before or "none", after)

    def revisions(self) -> tuple[str | None, str]:
        """(the database's schema revision, the newest this code knows)."""
        from alembic.script import ScriptDirectory

        with self.engine.connect() as connection:
            head = ScriptDirectory.from_config(self._alembic(connection)).get_current_head()
        assert head is not None
        return self._current_revision(), head

    def check_schema(self) -> None:
        """Raise StoreNotReady unless the schema is at the newest revision."""
        current, head = self._current_revision(), SCHEMA_REVISION
        if current != head:
            raise StoreNotReady(
                f"the database schema is at revision {current or 'none'}, this code needs {head}",
                hint="run `rules-engine db upgrade` (with the same database URL)")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StoreTx]:
        """A unit of work: commits when the block ends normally, rolls back on any exception.

        A value the database cannot hold (a text longer than its column, a number out of its
        range) is an EventError: the input was wrong, and nothing was written. The report
        rollups it changed are written last, just before the commit."""
        with self._writing(), _values_that_fit(), self._kept_connection() as connection, \
                connection.begin():
            tx = StoreTx(connection, self.dialect)
            yield tx
            tx.flush_rollups()

    @contextlib.contextmanager
    def _kept_connection(self) -> Iterator[Connection]:
        """A connection for one unit of work. On a SQLite file, connections are kept open
        between units of work (the pool's checkout and check-in cost more than an empty
        SQLite write transaction itself); a connection that broke, or one inherited from
        the process that forked this one, is never used again. Elsewhere, the pool's own."""
        if self._idle is None:
            with self.engine.connect() as connection:
                yield connection
            return
        if self._idle_pid != os.getpid():  # a fork: the parent's connections are not ours,
            self.engine.dispose(close=False)  # nor its pool's (SQLAlchemy's advice)
            self._idle, self._idle_pid = [], os.getpid()
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self.engine.connect()
        try:
            yield connection
        finally:  # one that broke, or is still in a transaction (a failed rollback): closed
            if connection.invalidated or connection.in_transaction():
                connection.close()
            else:
                self._idle.append(connection)

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """This process's turn to write (see writer_lock); nothing to wait for elsewhere."""
        return self._writer.held() if self._writer is not None else contextlib.nullcontext()

    def run(self, work: Callable[[StoreTx], T], *, attempts: int = 10) -> T:
        """``work`` in a unit of work, run again when the database reports a transient
        conflict (PostgreSQL serialization failure or deadlock, SQLite busy), after a random
        pause that doubles each time up to half a second (about 3 s in all at the most:
        batches that cross on the same rows, e.g. a team's rotation, clear within it)."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as tx:
                    return work(tx)
            except (OperationalError, ConversationRace) as error:
                if attempt == attempts or not _is_transient(error):
                    raise
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2 ** attempt)))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def dry_run(self, *, read_only: bool = False) -> Iterator[StoreTx]:
        """A unit of work that is always rolled back: for simulations that must change nothing."""
        writing = contextlib.nullcontext() if read_only else self._writing()
        with writing, _values_that_fit(), self.engine.connect() as connection:
            if read_only:
                connection = connection.execution_options(read_only=True)
            transaction = connection.begin()
            try:
                yield StoreTx(connection, self.dialect)
            finally:
                transaction.rollback()

    def read(self) -> contextlib.AbstractContextManager[StoreTx]:
        """A unit of work for reading only: takes no write lock, always rolled back."""
        return self.dry_run(read_only=True)

    def dispose(self) -> None:
        """Close every pooled connection (and those kept between units of work)."""
        while self._idle:
            self._idle.pop().close()
        self.engine.dispose()
