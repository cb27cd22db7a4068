"""SQLite implementation of the store contract: the embedded default, for one machine.

Each contract method is one transaction (writes take the write lock first), so the guarantees of
the Redis store's Lua scripts hold with any number of processes on the machine: unique names and
workspaces, both sides of a relationship changed together, counters that count each task once.

``SqliteStore`` opens the transaction and hands the connection to the module that does the work:
creation and the worker upsert (``creation.py``), deletion (``deletion.py``), task counters and
run status (``progress.py``), filters (``filters.py``), garbage collection (``maintenance.py``),
and rows written and read (``rows.py``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from merlin_tracking.errors import InvalidRecordError, RunNotFoundError, WorkerNotFoundError
from merlin_tracking.ids import id_sort_key, looks_like_id
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Record,
    Run,
    RunStatus,
    Study,
    Task,
    WorkerStatus,
)
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.records.run import ACTIVE_STATUSES
from merlin_tracking.stores.base import (
    DEFAULT_PREFIX,
    CatchUp,
    DanglingReference,
    Filters,
    TrackingStore,
    check_prefix,
)
from merlin_tracking.stores.sqlite import (
    creation,
    deletion,
    liveness,
    maintenance,
    progress,
    reaping,
    rows,
    tasks,
)
from merlin_tracking.stores.sqlite.connection import Connections, path_from_url
from merlin_tracking.stores.sqlite.filters import find_ids
from merlin_tracking.stores.sqlite.schema import SCHEMA_VERSION

R = TypeVar("R", bound=Record)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SqliteStore(TrackingStore):
    """Studies, runs and workers under one prefix of an SQLite database file."""

    backend = "sqlite"

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = check_prefix(prefix)  # the same rule as Redis: a prefix works on both
        self.path = path_from_url(url)
        self._db = Connections(url, self.path)

    # ------------------------------------------------------------------ writes
    def create_study(self, study: Study) -> tuple[str, bool]:
        with self._db.transaction(write=True) as conn:
            return creation.create_study(conn, self.prefix, study)

    def create_run(self, run: Run, keep_id: bool = False, study: Study | None = None) -> Run:
        study_id, kept = creation.check_new_run(run, keep_id, study)
        with self._db.transaction(write=True) as conn:
            if study is not None:
                study_id, _ = creation.create_study(conn, self.prefix, study)
                run = run.replace(study_id=study_id)
            return creation.create_run(conn, self.prefix, run, study_id, kept)

    def add_run_queues(self, run_id: str, queues: Sequence[str]) -> Run:
        with self._db.transaction(write=True) as conn:
            run = rows.load(conn, self.prefix, Run, run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            rows.add_queues(conn, self.prefix, run, queues)
            return self._read_one(conn, Run, run_id)

    def create_logical_worker(self, worker: LogicalWorker) -> bool:
        with self._db.transaction(write=True) as conn:
            return creation.create_logical_worker(conn, self.prefix, worker)

    def upsert_physical_worker(
        self, candidate: PhysicalWorker, given: frozenset[str]
    ) -> tuple[PhysicalWorker, str]:
        with self._db.transaction(write=True) as conn:
            worker_id, outcome = creation.upsert_physical_worker(
                conn, self.prefix, candidate, given
            )
            return self._read_one(conn, PhysicalWorker, worker_id), outcome

    def update_fields(
        self,
        record_type: type[Run | PhysicalWorker],
        record_id: str,
        changes: Mapping[str, Any],
    ) -> None:
        if "workers" in changes:
            raise InvalidRecordError("run workers change through link_run_worker, not as a field")
        ns = self.prefix
        with self._db.transaction(write=True) as conn:
            stored: Run | PhysicalWorker | None = rows.load(conn, ns, record_type, record_id)
            if stored is None:
                if record_type is Run:
                    raise RunNotFoundError(record_id)
                raise WorkerNotFoundError(record_id)
            updated = stored.replace(**changes)
            new_lw = changes.get("logical_worker_id")
            if new_lw and not rows.exists(conn, ns, "logical_worker", new_lw):
                raise WorkerNotFoundError(str(new_lw))
            rows.update(conn, ns, stored, updated)

    def link_run_worker(self, run_id: str, worker_id: str, linked: bool = True) -> bool:
        ns = self.prefix
        with self._db.transaction(write=True) as conn:
            if not rows.exists(conn, ns, "run", run_id):
                raise RunNotFoundError(run_id)
            if linked:
                if not rows.exists(conn, ns, "logical_worker", worker_id):
                    raise WorkerNotFoundError(worker_id)
                return rows.link(conn, ns, run_id, worker_id)
            cursor = conn.execute(
                "DELETE FROM run_worker WHERE ns = ? AND run_id = ? AND worker_id = ?",
                (ns, run_id, worker_id),
            )
            return cursor.rowcount > 0

    def apply_task_events(
        self,
        events: Sequence[TaskEvent],
        settle: float = 0.0,
        workspaces: Mapping[str, str] | None = None,
    ) -> list[str]:
        if not events:
            return []
        with self._db.transaction(write=True) as conn:
            return progress.apply_task_events(conn, self.prefix, events, _now(), settle, workspaces)

    def catch_up(self) -> CatchUp:
        # Every read and heartbeat calls this: look under a read lock, take the write lock
        # only when something is due (then look again under it).
        ns = self.prefix
        with self._db.transaction(write=False) as conn:
            if not progress.anything_due(conn, ns, _now()):
                return CatchUp()
        with self._db.transaction(write=True) as conn:
            now = _now()
            stalled = reaping.reap(conn, ns, liveness.stale_worker_ids(conn, ns, now), now)
            completed = progress.settle_runs(conn, ns, now, progress.settled_changes(conn, ns, now))
            progress.drop_tasks(conn, ns, progress.expired_task_runs(conn, ns, now), expired=True)
            return CatchUp(tuple(completed), tuple(stalled))

    def stop_worker(self, worker_id: str, at: datetime) -> PhysicalWorker:
        ns = self.prefix
        with self._db.transaction(write=True) as conn:
            worker = rows.load(conn, ns, PhysicalWorker, worker_id)
            if worker is None:
                raise WorkerNotFoundError(worker_id)
            stopped = worker.replace(status=WorkerStatus.STOPPED, pid=None, heartbeat_timestamp=at)
            rows.update(conn, ns, worker, stopped)
            reason = f"worker {worker.name} shut down with the task unfinished"
            reaping.worker_gone(conn, ns, worker, reason, _now())
            return self._read_one(conn, PhysicalWorker, worker_id)

    def refresh_runs_on_queues(self, queues: Sequence[str]) -> None:
        with self._db.transaction(write=True) as conn:
            now = _now()
            runs = progress.active_runs_on_queues(conn, self.prefix, queues)
            progress.refresh_runs(conn, self.prefix, runs, now)

    def change_publishing(self, run_id: str, delta: int) -> RunStatus | None:
        with self._db.transaction(write=True) as conn:
            run = rows.load(conn, self.prefix, Run, run_id)
            if run is None:
                return None
            now = _now()
            counted = run.replace(publishing=max(0, run.publishing + delta), updated_at=now)
            return progress.refresh(conn, self.prefix, run, counted, now).status

    def set_run_status(
        self, run_id: str, status: RunStatus, allowed_from: Sequence[RunStatus]
    ) -> tuple[bool, RunStatus]:
        with self._db.transaction(write=True) as conn:
            run = rows.load(conn, self.prefix, Run, run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            if run.status not in allowed_from:
                return False, run.status
            now = _now()
            progress.set_status(conn, self.prefix, run, status, now)
            return True, run.status

    def attach_worker_to_runs(self, worker_id: str) -> list[str]:
        ns = self.prefix
        active = sorted(status.value for status in ACTIVE_STATUSES)
        with self._db.transaction(write=True) as conn:
            found = [
                str(run_id)
                for (run_id,) in conn.execute(
                    "SELECT DISTINCT q.run_id FROM lw_queue AS w "
                    "JOIN run_queue AS q ON q.ns = w.ns AND q.queue = w.queue "
                    "JOIN run AS r ON r.ns = q.ns AND r.id = q.run_id "
                    "WHERE w.ns = ? AND w.worker_id = ? "
                    f"AND r.status IN ({rows.marks(active)}) ORDER BY q.run_id",
                    (ns, worker_id, *active),
                )
            ]
            attached = [run_id for run_id in found if rows.link(conn, ns, run_id, worker_id)]
            progress.refresh_runs(conn, ns, found, _now())
            return attached

    def heartbeat(self, worker_id: str, at: datetime) -> bool:
        ns = self.prefix
        with self._db.transaction(write=True) as conn:
            worker = rows.load(conn, ns, PhysicalWorker, worker_id)
            if worker is None:
                return False
            revived = worker.status is WorkerStatus.STALLED
            beat = worker.replace(
                heartbeat_timestamp=at,
                status=WorkerStatus.RUNNING if revived else worker.status,
            )
            rows.update(conn, ns, worker, beat)
            if revived:
                queues = liveness.worker_queues(conn, ns, beat)
                progress.refresh_runs(
                    conn, ns, progress.active_runs_on_queues(conn, ns, queues), _now()
                )
            return True

    # ------------------------------------------------------------------ the task ledger
    def run_tasks(self, run_id: str) -> list[Task]:
        with self._db.transaction(write=False) as conn:
            return tasks.run_tasks(conn, self.prefix, run_id)

    def find_tasks(
        self, filters: Mapping[str, Sequence[str]], limit: int | None = None
    ) -> list[Task]:
        with self._db.transaction(write=False) as conn:
            return tasks.find_tasks(conn, self.prefix, filters, limit)

    def find_task(self, task_id: str) -> Task | None:
        with self._db.transaction(write=False) as conn:
            return tasks.find_task(conn, self.prefix, task_id)

    def delete_task(self, run_id: str, task_id: str) -> bool:
        with self._db.transaction(write=True) as conn:
            return tasks.delete_task(conn, self.prefix, run_id, task_id)

    def take_message(self, run_id: str, task_id: str) -> str | None:
        with self._db.transaction(write=True) as conn:
            return tasks.take_message(conn, self.prefix, run_id, task_id)

    def kept_message_ids(self, run_id: str) -> set[str]:
        with self._db.transaction(write=False) as conn:
            found = conn.execute(
                "SELECT id FROM task_message WHERE ns = ? AND run_id = ?", (self.prefix, run_id)
            )
            return {str(task_id) for (task_id,) in found}

    def keep_message(self, run_id: str, task_id: str, message: str) -> bool:
        with self._db.transaction(write=True) as conn:
            return tasks.keep_message(conn, self.prefix, run_id, task_id, message)

    def find_dangling(self) -> list[DanglingReference]:
        with self._db.transaction(write=False) as conn:
            return maintenance.find_dangling(conn, self.prefix)

    def remove_dangling(self, references: Sequence[DanglingReference]) -> int:
        if not references:
            return 0
        with self._db.transaction(write=True) as conn:
            return maintenance.remove_dangling(conn, self.prefix, references)

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        if not run_ids:
            return 0
        with self._db.transaction(write=True) as conn:
            return deletion.delete_records(conn, self.prefix, "run", run_ids)

    def delete_study(self, study_id: str, remove_runs: bool) -> bool:
        with self._db.transaction(write=True) as conn:
            return deletion.delete_study(conn, self.prefix, study_id, remove_runs)

    def delete_logical_workers(self, worker_ids: Sequence[str]) -> int:
        if not worker_ids:
            return 0
        with self._db.transaction(write=True) as conn:
            return deletion.delete_logical_workers(conn, self.prefix, worker_ids)

    def delete_physical_workers(self, worker_ids: Sequence[str]) -> int:
        if not worker_ids:
            return 0
        with self._db.transaction(write=True) as conn:
            return deletion.delete_records(conn, self.prefix, "physical_worker", worker_ids)

    # ------------------------------------------------------------------ reads
    def _read_one(self, conn: sqlite3.Connection, record_type: type[R], record_id: str) -> R:
        return rows.read(conn, self.prefix, record_type, [record_id], _now())[record_id]

    def fetch(self, record_type: type[R], id_or_key: str) -> R | None:
        entity = record_type.ENTITY
        with self._db.transaction(write=False) as conn:
            record_id: str | None = None
            if looks_like_id(id_or_key) and rows.exists(conn, self.prefix, entity, id_or_key):
                record_id = id_or_key
            else:
                record_id = rows.id_by_unique(conn, self.prefix, entity, id_or_key)
            if record_id is None:
                return None
            return self._read_one(conn, record_type, record_id)

    def fetch_many(self, record_type: type[R], ids: Sequence[str]) -> list[R]:
        with self._db.transaction(write=False) as conn:
            return self._fetch_many(conn, record_type, ids)

    def _fetch_many(
        self, conn: sqlite3.Connection, record_type: type[R], ids: Sequence[str]
    ) -> list[R]:
        found = rows.read(conn, self.prefix, record_type, ids, _now())
        return [found[record_id] for record_id in ids if record_id in found]

    def find_ids(self, record_type: type[Record], filters: Filters) -> list[str]:
        with self._db.transaction(write=False) as conn:
            return find_ids(conn, self.prefix, record_type.ENTITY, filters)

    def query(self, record_type: type[R], filters: Filters, limit: int | None = None) -> list[R]:
        """Like the base class, in one read transaction (one consistent snapshot)."""
        with self._db.transaction(write=False) as conn:
            ids = sorted(find_ids(conn, self.prefix, record_type.ENTITY, filters), key=id_sort_key)
            if record_type is LogicalWorker:
                # Logical worker ids are digests, not time-ordered: order by the records.
                records = self._fetch_many(conn, record_type, ids)
                records.sort(key=lambda rec: (rec.created_at, rec.id))
                return records[:limit] if limit is not None else records
            return self._fetch_many(conn, record_type, ids[:limit] if limit is not None else ids)

    def migrate(self) -> dict[str, int]:
        # The schema (and the records with it) is migrated in place when the file is opened
        # (``schema.ensure_schema``): nothing is left to do by now.
        return {"runs": self.count(Run), "runs_upgraded": 0, "ledgers_indexed": 0}

    def count(self, record_type: type[Record]) -> int:
        with self._db.transaction(write=False) as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {record_type.ENTITY} WHERE ns = ?", (self.prefix,)
            ).fetchone()
            return int(row[0])

    def recent_run_ids(self, limit: int) -> list[str]:
        with self._db.transaction(write=False) as conn:
            found = conn.execute(
                "SELECT id FROM run WHERE ns = ? ORDER BY seq DESC LIMIT ?", (self.prefix, limit)
            ).fetchall()
            return [str(run_id) for (run_id,) in found]

    def server_info(self) -> dict[str, Any]:
        with self._db.transaction(write=False) as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return {
            "server": "sqlite",
            "server_version": sqlite3.sqlite_version,
            "path": self.path,
            "file_size_bytes": os.path.getsize(self.path),
            "journal_mode": mode,
            "schema_version": SCHEMA_VERSION,
            "prefix": self.prefix,
        }

    def ping(self) -> None:
        with self._db.transaction(write=False) as conn:
            conn.execute("SELECT 1").fetchone()
