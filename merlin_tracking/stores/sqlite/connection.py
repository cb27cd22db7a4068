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
import time
from collections.abc import Iterator
from contextlib import contextmanager

from merlin_tracking.errors import InvalidRecordError, StoreUnavailableError
from merlin_tracking.stores.sqlite.schema import ensure_schema

SCHEME_PREFIX = "sqlite:///"
#: Seconds a writer waits for the write lock before the store reports itself unavailable.
BUSY_TIMEOUT = 30.0


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


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (once per file; the mode is stored in it).

    The switch needs a moment of exclusive access and answers "database is locked" at once,
    without waiting, while other processes open the same new file: so wait here instead.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
            continue
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL mode here (journal mode {mode})")
        return


class Connections:
    """The connections of one store: opened lazily, one per (process, thread)."""

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        # Keyed by (pid, thread id). Entries of other pids were inherited through fork: they stay
        # referenced, so a child never closes (checkpoints, unlocks) its parent's connections,
        # as ``threading.local`` would when it drops the locals of threads lost in the fork.
        self._conns: dict[tuple[int, int], sqlite3.Connection] = {}

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
        """This process's and thread's connection, opened on first use."""
        key = (os.getpid(), threading.get_ident())
        conn = self._conns.get(key)
        if conn is None:
            self._forget_finished_threads(key[0])
            conn = self._conns[key] = self._open()
        return conn

    def _forget_finished_threads(self, pid: int) -> None:
        # Only this process's connections are ever dropped (closing them); lock-free, because a
        # lock held by another thread at fork time would stay locked forever in the child.
        alive = {thread.ident for thread in threading.enumerate()}
        for owner in list(self._conns):
            if owner[0] == pid and owner[1] not in alive:
                self._conns.pop(owner, None)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=True
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                _switch_to_wal(conn)
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
