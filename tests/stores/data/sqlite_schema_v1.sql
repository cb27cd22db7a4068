-- The SQLite layout of schema version 1 (wave 1), as its ensure_schema created it:
-- tests/stores/test_sqlite_store.py builds a version-1 file from it to test the migration.
CREATE TABLE IF NOT EXISTS schema_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS study (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (ns, id),
        UNIQUE (ns, name)
    ) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sequence (
        ns TEXT NOT NULL,
        name TEXT NOT NULL,
        last INTEGER NOT NULL,
        PRIMARY KEY (ns, name)
    ) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run (
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
    ) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_by_study ON run (ns, study_id);
CREATE INDEX IF NOT EXISTS run_by_status ON run (ns, status);
CREATE TABLE IF NOT EXISTS run_queue (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, queue),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_queue_by_queue ON run_queue (ns, queue, run_id);
CREATE TABLE IF NOT EXISTS task_state (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, task_id),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logical_worker (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (ns, id)
    ) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS logical_worker_by_name ON logical_worker (ns, name);
CREATE TABLE IF NOT EXISTS lw_queue (
        ns TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        PRIMARY KEY (ns, worker_id, queue),
        FOREIGN KEY (ns, worker_id) REFERENCES logical_worker (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lw_queue_by_queue ON lw_queue (ns, queue, worker_id);
CREATE TABLE IF NOT EXISTS run_worker (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, worker_id),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE,
        FOREIGN KEY (ns, worker_id) REFERENCES logical_worker (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_worker_by_worker ON run_worker (ns, worker_id, run_id);
CREATE TABLE IF NOT EXISTS physical_worker (
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
    ) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS physical_worker_by_status ON physical_worker (ns, status);
CREATE INDEX IF NOT EXISTS physical_worker_by_host ON physical_worker (ns, host);
CREATE INDEX IF NOT EXISTS physical_worker_by_lw ON physical_worker (ns, logical_worker_id);
INSERT INTO schema_info (key, value) VALUES ('version', '1');
