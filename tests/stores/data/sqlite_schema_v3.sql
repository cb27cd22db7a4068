-- The SQLite layout of schema version 3 (before physical_worker.job_id), as that version
-- created it: tests/stores/test_sqlite_store.py migrates a file made from it.
CREATE TABLE schema_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE study (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (ns, id),
        UNIQUE (ns, name)
    ) WITHOUT ROWID;
CREATE TABLE sequence (
        ns TEXT NOT NULL,
        name TEXT NOT NULL,
        last INTEGER NOT NULL,
        PRIMARY KEY (ns, name)
    ) WITHOUT ROWID;
CREATE TABLE run (
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
    ) WITHOUT ROWID;
CREATE INDEX run_by_study ON run (ns, study_id);
CREATE INDEX run_by_status ON run (ns, status);
CREATE TABLE run_queue (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, queue),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE INDEX run_queue_by_queue ON run_queue (ns, queue, run_id);
CREATE TABLE logical_worker (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (ns, id)
    ) WITHOUT ROWID;
CREATE INDEX logical_worker_by_name ON logical_worker (ns, name);
CREATE TABLE lw_queue (
        ns TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        PRIMARY KEY (ns, worker_id, queue),
        FOREIGN KEY (ns, worker_id) REFERENCES logical_worker (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE INDEX lw_queue_by_queue ON lw_queue (ns, queue, worker_id);
CREATE TABLE run_worker (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, worker_id),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE,
        FOREIGN KEY (ns, worker_id) REFERENCES logical_worker (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE INDEX run_worker_by_worker ON run_worker (ns, worker_id, run_id);
CREATE TABLE physical_worker (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        host TEXT,
        logical_worker_id TEXT,
        fields TEXT NOT NULL,
        alive_until INTEGER,
        PRIMARY KEY (ns, id),
        UNIQUE (ns, name),
        FOREIGN KEY (ns, logical_worker_id) REFERENCES logical_worker (ns, id)
    ) WITHOUT ROWID;
CREATE INDEX physical_worker_by_status ON physical_worker (ns, status);
CREATE INDEX physical_worker_by_host ON physical_worker (ns, host);
CREATE INDEX physical_worker_by_lw ON physical_worker (ns, logical_worker_id);
CREATE TABLE task (
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
    ) WITHOUT ROWID;
CREATE INDEX task_by_id ON task (ns, id);
CREATE INDEX task_by_state ON task (ns, run_id, state);
CREATE INDEX task_by_worker ON task (ns, worker, state);
CREATE TABLE run_waiting (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (ns, run_id, queue),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE TABLE task_message (
        ns TEXT NOT NULL,
        run_id TEXT NOT NULL,
        id TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (ns, run_id, id),
        FOREIGN KEY (ns, run_id) REFERENCES run (ns, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
CREATE INDEX run_by_tasks_expiry ON run (ns, tasks_expire_at);
CREATE INDEX run_by_settle_time ON run (ns, settle_at);
CREATE INDEX physical_worker_by_deadline ON physical_worker (ns, alive_until);
CREATE INDEX task_by_ns_state ON task (ns, state);
CREATE INDEX task_by_name ON task (ns, name);
CREATE INDEX task_by_queue ON task (ns, queue);
INSERT INTO schema_info (key, value) VALUES ('version', '3');
