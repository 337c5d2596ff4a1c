"""Runs ``rules-engine`` with every statement it sends to SQLite recorded, for the replay floor.

    python bench/statement_recorder.py [--time-only] RECORD_FILE -- [rules-engine arguments]

Python's ``sqlite3`` is wrapped before anything imports it: each connection records, in
order, every ``execute`` / ``executemany`` (its SQL and parameters, on the connection or
on one of its cursors) and every ``commit`` / ``rollback``, and times every call into the
driver (those, and the fetches of rows); at exit the recording of every connection is
pickled to RECORD_FILE as ``[(connection number, [(sql, parameters, many), ...], seconds
inside the driver), ...]``. ``bench/ingest_floor.py`` replays it with ``sqlite3`` alone.
With ``--time-only`` nothing is recorded (the lists stay empty): only the time inside the
driver, without the recording's own work between the calls.
"""
from __future__ import annotations

import atexit
import pickle
import sqlite3
import sys
import time
from typing import Any

Step = tuple[str, Any, bool]
RECORDINGS: list[RecordingConnection] = []
RECORD_STEPS = True  # False with --time-only


def _kept(parameters: Any) -> Any:
    """Parameters as they can be pickled: a blob given as a memoryview becomes bytes (which
    SQLite binds alike)."""
    if isinstance(parameters, memoryview):
        return bytes(parameters)
    if isinstance(parameters, (list, tuple)):
        return type(parameters)(_kept(value) for value in parameters)
    if isinstance(parameters, dict):
        return {key: _kept(value) for key, value in parameters.items()}
    return parameters


def _timed(connection: Any, call: Any, *arguments: Any) -> Any:
    """``call(*arguments)``, its time added to the connection's seconds inside the driver."""
    started = time.perf_counter()
    try:
        return call(*arguments)
    finally:
        connection.seconds += time.perf_counter() - started


class RecordingCursor(sqlite3.Cursor):
    """A cursor whose statements land in its connection's recording, timed."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:  # type: ignore[override]
        if RECORD_STEPS:
            self.connection.steps.append((sql, _kept(parameters), False))  # type: ignore[attr-defined]
        return _timed(self.connection, super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:  # type: ignore[override]
        rows = list(parameters)
        if RECORD_STEPS:
            self.connection.steps.append((sql, _kept(rows), True))  # type: ignore[attr-defined]
        return _timed(self.connection, super().executemany, sql, rows)

    def fetchone(self) -> Any:
        return _timed(self.connection, super().fetchone)

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        return _timed(self.connection, super().fetchmany, size)

    def fetchall(self) -> list[Any]:
        return _timed(self.connection, super().fetchall)


class RecordingConnection(sqlite3.Connection):
    """A connection that records its statements, commits and rollbacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[Step] = []
        self.seconds = 0.0  # inside the driver: statements, fetches, commits
        RECORDINGS.append(self)

    def cursor(self, factory: Any = RecordingCursor) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)

    def commit(self) -> None:
        if self.in_transaction and RECORD_STEPS:
            self.steps.append(("COMMIT", (), False))
        _timed(self, super().commit)

    def rollback(self) -> None:
        if self.in_transaction and RECORD_STEPS:
            self.steps.append(("ROLLBACK", (), False))
        super().rollback()


def _connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    kwargs["factory"] = RecordingConnection
    return _original_connect(*args, **kwargs)


_original_connect = sqlite3.connect


def main() -> int:
    global RECORD_STEPS
    options = sys.argv[1:]
    if options[:1] == ["--time-only"]:
        RECORD_STEPS, options = False, options[1:]
    record_file, separator, *arguments = options
    assert separator == "--", __doc__
    sqlite3.connect = sqlite3.dbapi2.connect = _connect  # type: ignore[assignment]

    def save() -> None:
        with open(record_file, "wb") as out:
            pickle.dump([(number, connection.steps, connection.seconds)
                         for number, connection in enumerate(RECORDINGS)], out)

    atexit.register(save)
    from rules_engine.cli import main as cli_main
    return cli_main(arguments)


if __name__ == "__main__":
    sys.exit(main())
