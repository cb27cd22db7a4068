"""SQLite connections: one per process and thread, in WAL mode, with explicit transactions.

A connection must never cross a ``fork`` or a thread (sqlite3 refuses the latter, and locks
held by a parent mean nothing in its child), so each (process, thread) opens its own on first
use. Writes take the write lock up front (``BEGIN IMMEDIATE``): a transaction that started as a
reader and later writes could fail at once with "database is locked" instead of waiting.
WAL lets readers work while one writer commits; ``busy_timeout`` makes writers queue.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from merlin_tracking.errors import InvalidRecordError, StoreUnavailableError
from merlin_tracking.stores.sqlite.schema import ensure_schema

SCHEME_PREFIX = "sqlite:///"
#: Seconds a writer waits for the write lock before the store reports itself unavailable.
BUSY_TIMEOUT = 30.0

# Connections inherited through fork: kept referenced so the child never closes (and so never
# checkpoints or unlocks) a connection that belongs to its parent.
_inherited: list[sqlite3.Connection] = []


def path_from_url(url: str) -> str:
    """Absolute file path of ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db``.

    As in SQLAlchemy (and kombu's ``sqla+sqlite://``), the path is everything after
    ``sqlite:///``: absolute when it starts with ``/``, else relative to the current directory
    when the store is opened (resolved once, so a later ``chdir`` changes nothing).
    """
    if not isinstance(url, str) or not url.startswith(SCHEME_PREFIX):
        raise InvalidRecordError(
            "an SQLite store URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = url[len(SCHEME_PREFIX) :]
    if not path or path == ":memory:" or path.endswith("/"):
        raise InvalidRecordError(
            f"{url}: name a database file (an in-memory database cannot be shared by workers)"
        )
    return os.path.abspath(path)


def _explain(path: str, exc: sqlite3.Error) -> str:
    reason = str(exc) or type(exc).__name__
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        return f"{reason}: directory {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"{reason}: directory {folder} is not writable"
    return f"{reason} ({path})"


def _is_unavailable(exc: sqlite3.Error) -> bool:
    # Integrity and programming errors are bugs, not outages: let them surface as they are.
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


class Connections:
    """The connections of one store: opened lazily, one per (process, thread)."""

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        self._local = threading.local()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn "cannot open / locked / read-only / not a database" into StoreUnavailableError."""
        try:
            yield
        except sqlite3.Error as exc:
            if _is_unavailable(exc):
                raise StoreUnavailableError(self.url, _explain(self.path, exc)) from None
            raise

    def get(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == pid:
            return conn
        if conn is not None:
            _inherited.append(conn)
        self._local.conn = None
        conn = self._open()
        self._local.conn, self._local.pid = conn, pid
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=True
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise sqlite3.OperationalError(f"cannot use WAL mode (journal mode {mode})")
            # Durable against crashes of any process; a power cut may lose the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
            ensure_schema(conn, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it commits, or none of it (any exception rolls back)."""
        with self.guard():
            conn = self.get()
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
