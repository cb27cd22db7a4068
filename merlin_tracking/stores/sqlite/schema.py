"""Tables of the SQLite store and the schema version that guards them.

Every table carries ``ns`` (the store prefix), so several ledgers share one file without seeing
each other, exactly like Redis key prefixes. A record is one row: the columns that filters and
unique constraints need, plus ``fields``, the JSON object of ``Record.to_fields()`` (field name ->
JSON text), from which ``Record.from_fields`` rebuilds it exactly. The columns are derived from
the record on every write, never edited on their own.

Run ids are "r" + a number from the ``sequence`` table, never reused (like Redis ``INCR``);
``run.seq`` holds the number so runs sort by creation in SQL.

Relationships are rows, not copies on both sides, so the two sides can never disagree:

    run_worker       run <-> logical worker links (``run.workers`` and ``lw.runs``)
    run.study_id     ``study.runs``
    physical_worker.logical_worker_id   ``lw.physical_workers``
    run_queue / lw_queue                 queue indexes, derived from the records' ``queues``
    task_state       task id -> state letter, so each task counts once (see ``progress``)

Foreign keys stop dangling references (cascades drop links, queue rows and task states with
their run or worker); a study or logical worker is only deleted after its referrers are detached.
"""

from __future__ import annotations

import sqlite3

from merlin_tracking.errors import TrackingError

#: Version of the table layout below; a file written by a newer layout is refused.
SCHEMA_VERSION = 1

DDL = (
    """CREATE TABLE IF NOT EXISTS study (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (ns, id),
        UNIQUE (ns, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS sequence (
        ns TEXT NOT NULL,
        name TEXT NOT NULL,
        last INTEGER NOT NULL,
        PRIMARY KEY (ns, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS run (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        study_id TEXT,
        workspace TEXT NOT NULL,
        status TEXT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (ns, id),
        UNIQUE (ns, seq),
        UNIQUE (ns, workspace),
        FOREIGN KEY (ns, study_id) REFERENCES study (ns, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS run_by_study ON run (ns, study_id)",
    "CREATE INDEX IF NOT EXISTS run_by_status ON run (ns, status)",
    """CREATE TABLE IF NOT EXISTS run_queue (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, queue),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS run_queue_by_queue ON run_queue (ns, queue, run_id)",
    """CREATE TABLE IF NOT EXISTS task_state (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, task_id),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS logical_worker (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (ns, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS logical_worker_by_name ON logical_worker (ns, name)",
    """CREATE TABLE IF NOT EXISTS lw_queue (
        ns TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        PRIMARY KEY (ns, worker_id, queue),
        FOREIGN KEY (ns, worker_id) REFERENCES logical_worker (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS lw_queue_by_queue ON lw_queue (ns, queue, worker_id)",
    """CREATE TABLE IF NOT EXISTS run_worker (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, worker_id),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE,
        FOREIGN KEY (ns, worker_id) REFERENCES logical_worker (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS run_worker_by_worker ON run_worker (ns, worker_id, run_id)",
    """CREATE TABLE IF NOT EXISTS physical_worker (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        host TEXT,
        logical_worker_id TEXT,
        fields TEXT NOT NULL,
        PRIMARY KEY (ns, id),
        UNIQUE (ns, name),
        FOREIGN KEY (ns, logical_worker_id) REFERENCES logical_worker (ns, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS physical_worker_by_status ON physical_worker (ns, status)",
    "CREATE INDEX IF NOT EXISTS physical_worker_by_host ON physical_worker (ns, host)",
    "CREATE INDEX IF NOT EXISTS physical_worker_by_lw ON physical_worker (ns, logical_worker_id)",
)

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) "
    "WITHOUT ROWID"
)


def stored_version(conn: sqlite3.Connection) -> int | None:
    """The file's schema version, or None for a file this package never initialised."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_info'"
    ).fetchone()
    if exists is None:
        return None
    row = conn.execute("SELECT value FROM schema_info WHERE key = 'version'").fetchone()
    return None if row is None else int(row[0])


def _refuse_newer(version: int | None, path: str) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise TrackingError(
            f"tracking database {path} has schema version {version}, written by a newer "
            f"merlin_tracking; this version reads up to {SCHEMA_VERSION}: upgrade the package"
        )


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables on first use; refuse a file written by a newer layout.

    The common case (tables present, same version) only reads, so opening a connection never
    queues behind writers; creation runs under the write lock and re-checks, so any number of
    processes may open a new file at once.
    """
    version = stored_version(conn)
    _refuse_newer(version, path)
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = stored_version(conn)
        _refuse_newer(version, path)
        if version is None:
            conn.execute(_VERSION_TABLE)
            for statement in DDL:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_info (key, value) VALUES ('version', ?)",
                (str(SCHEMA_VERSION),),
            )
        # Migrations from older layouts go here, one version step at a time.
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
