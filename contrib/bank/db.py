"""A small SQLite helper shared by the two stores: one connection per thread, WAL, transactions.

SQLite allows one writer at a time; ``BEGIN IMMEDIATE`` takes the write lock at the start of a
transaction, so a read-check-write sequence inside :meth:`Database.transaction` is atomic
across threads *and* processes that open the same file. Waiting for the lock is bounded by
``busy_timeout``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Database"]


class Database:
    """An SQLite file opened lazily once per thread. Thread-safe; ``close`` closes them all.

    ``schema`` (a script of ``CREATE ... IF NOT EXISTS`` statements) runs once at
    construction. Parent folders of ``path`` are created. Raises ``sqlite3.Error`` if the
    file cannot be opened.
    """

    def __init__(self, path: str | Path, schema: str, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_ms = int(busy_timeout * 1000)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._closed = False
        conn = self.connection()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(schema)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; use :meth:`transaction` to write)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise sqlite3.ProgrammingError(f"database {self.path} is closed")
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=30
                )
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
                conn.execute("PRAGMA synchronous=NORMAL")
                self._all.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` if the block raises)."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # also when COMMIT itself failed: never leave it open
                conn.execute("ROLLBACK")
            raise

    def ping(self) -> None:
        """Read the schema through this thread's connection; raise ``sqlite3.Error`` if the
        file cannot be read (for readiness probes)."""
        self.connection().execute("SELECT COUNT(*) FROM sqlite_master").fetchone()

    def close(self) -> None:
        """Close every thread's connection. Idempotent; later use raises ``ProgrammingError``."""
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
