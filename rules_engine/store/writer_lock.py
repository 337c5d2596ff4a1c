"""One writer at a time on a SQLite file, queued by the operating system.

SQLite lets one transaction write at a time; the others wait in its busy handler, which
polls by sleeping (1 ms, then 2, 5, 10 ms ...), so a waiting writer typically sleeps
through several transactions of the one holding the lock. Taking an OS lock (``flock`` on
a file beside the database, plus a lock for the threads of this process) before
``BEGIN IMMEDIATE`` hands the database to the next writer the moment the previous one
commits. SQLite's own locking stays underneath, as the guarantee.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path


class WriterLock:
    """An exclusive lock shared by every process and thread that writes one SQLite file."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + "-writer.lock")
        self._threads = threading.RLock()
        self._descriptor: int | None = None
        self._pid = 0
        self._depth = 0  # how many times the thread holding ``_threads`` entered

    def _file(self) -> int:
        if self._descriptor is None or self._pid != os.getpid():  # a fork needs its own
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._descriptor

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block (re-entrant within one thread)."""
        with self._threads:
            descriptor = self._file()
            if self._depth == 0:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(descriptor, fcntl.LOCK_UN)
