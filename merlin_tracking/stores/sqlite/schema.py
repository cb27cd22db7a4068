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
    task             the task ledger: one row per task of a run (see ``stores/rules.py``)
    run_waiting      per run and queue, how many of its tasks wait there (STALLED needs it)
    task_message     the message a worker received, until its task finishes (opt-in:
                     ``tracking_keep_messages``), so a lost task can be published again

Foreign keys stop dangling references (cascades drop links, queue rows and task states with
their run or worker); a study or logical worker is only deleted after its referrers are detached.
"""

from __future__ import annotations

import sqlite3

from merlin_tracking.errors import TrackingError

#: Version of the table layout below; a file written by a newer layout is refused, an older
#: one is migrated in place (``MIGRATIONS``) the first time this version opens it.
SCHEMA_VERSION = 4

# Tables added by schema version 2 (also created by a fresh file).
TASK_DDL = (
    """CREATE TABLE IF NOT EXISTS task (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        id TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        name TEXT,
        queue TEXT,
        worker TEXT,
        queued_at INTEGER,
        started_at INTEGER,
        finished_at INTEGER,
        error TEXT,
        PRIMARY KEY (ns, run_id, id),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS task_by_id ON task (ns, id)",
    "CREATE INDEX IF NOT EXISTS task_by_state ON task (ns, run_id, state)",
    "CREATE INDEX IF NOT EXISTS task_by_worker ON task (ns, worker, state)",
    """CREATE TABLE IF NOT EXISTS run_waiting (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (ns, run_id, queue),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS task_message (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        id TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, id),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS run_by_tasks_expiry ON run (ns, tasks_expire_at)",
    "CREATE INDEX IF NOT EXISTS run_by_settle_time ON run (ns, settle_at)",
    "CREATE INDEX IF NOT EXISTS physical_worker_by_deadline ON physical_worker (ns, alive_until)",
)

# Indexes added by schema version 3: task filters without a run follow their matches.
TASK_INDEX_DDL = (
    "CREATE INDEX IF NOT EXISTS task_by_ns_state ON task (ns, state)",
    "CREATE INDEX IF NOT EXISTS task_by_name ON task (ns, name)",
    "CREATE INDEX IF NOT EXISTS task_by_queue ON task (ns, queue)",
)

# Added by schema version 4: physical workers found by the batch job they run in.
JOB_DDL = ("CREATE INDEX IF NOT EXISTS physical_worker_by_job ON physical_worker (ns, job_id)",)

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
        settle_at INTEGER,
        tasks_expire_at INTEGER,
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
        alive_until INTEGER,
        job_id TEXT,
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


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Version 1 kept one state letter per task (``task_state``): those become task rows
    (a task in a started or finished-by-running state counts one attempt), queued tasks are
    counted per queue of their run, runs get the columns of their settle time and of their task
    records' expiry, physical workers the one of their liveness deadline."""
    conn.execute("ALTER TABLE run ADD COLUMN tasks_expire_at INTEGER")
    conn.execute("ALTER TABLE run ADD COLUMN settle_at INTEGER")
    conn.execute(
        "UPDATE run SET settle_at = CAST(json_extract(fields, '$.settle_until') AS INTEGER) "
        "WHERE json_extract(fields, '$.settle_until') IS NOT NULL"
    )
    conn.execute("ALTER TABLE physical_worker ADD COLUMN alive_until INTEGER")
    conn.execute(
        "UPDATE physical_worker SET alive_until = CAST(json_extract(fields, "
        "'$.heartbeat_timestamp') AS INTEGER) + CAST(json_extract(fields, '$.stale_after') "
        "* 1000000 AS INTEGER) WHERE status = 'RUNNING' AND json_extract(fields, "
        "'$.stale_after') IS NOT NULL"
    )
    for statement in TASK_DDL:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO task (ns, run_id, id, state, attempts) SELECT ns, run_id, task_id, state, "
        "CASE WHEN state IN ('s', 'r', 'S', 'F') THEN 1 ELSE 0 END FROM task_state"
    )
    conn.execute(
        "INSERT INTO run_waiting (ns, run_id, queue, n) SELECT ns, run_id, '', count(*) "
        "FROM task WHERE state IN ('q', 'r') GROUP BY ns, run_id"
    )
    conn.execute("DROP TABLE task_state")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Version 3 indexes task records by state, name and queue across runs."""
    for statement in TASK_INDEX_DDL:
        conn.execute(statement)


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """Version 4 gives physical workers the indexed column of their batch job's id (workers
    recorded before it ran in no known allocation; any field already stored is copied)."""
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(physical_worker)")}
    if "job_id" not in columns:
        conn.execute("ALTER TABLE physical_worker ADD COLUMN job_id TEXT")
    conn.execute(
        "UPDATE physical_worker SET job_id = json_extract(fields, '$.job_id') "
        "WHERE json_extract(fields, '$.job_id') IS NOT NULL"
    )
    for statement in JOB_DDL:
        conn.execute(statement)


#: Migration from version ``n`` to ``n + 1``, run in the write transaction that opens the file.
MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables on first use, migrate an older layout in place, refuse a newer one.

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
            for statement in (*DDL, *TASK_DDL, *TASK_INDEX_DDL, *JOB_DDL):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_info (key, value) VALUES ('version', ?)",
                (str(SCHEMA_VERSION),),
            )
        else:
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](conn)
            conn.execute(
                "UPDATE schema_info SET value = ? WHERE key = 'version'", (str(SCHEMA_VERSION),)
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
