"""SQLite implementation of the store contract: the embedded default, for one machine.

Each contract method is one transaction (writes take the write lock first), so the guarantees of
the Redis store's Lua scripts hold with any number of processes on the machine: unique names and
workspaces, both sides of a relationship changed together, counters that count each task once.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from merlin_tracking.errors import (
    DuplicateEntityError,
    InvalidRecordError,
    RunNotFoundError,
    StudyNotFoundError,
    WorkerNotFoundError,
)
from merlin_tracking.ids import id_sort_key, looks_like_id, new_id, run_sequence
from merlin_tracking.ids import run_id as format_run_id
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Record,
    Run,
    RunStatus,
    Study,
)
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.records.run import ACTIVE_STATUSES
from merlin_tracking.stores.base import (
    DEFAULT_PREFIX,
    DanglingReference,
    Filters,
    TrackingStore,
    check_prefix,
)
from merlin_tracking.stores.sqlite import maintenance, progress, rows
from merlin_tracking.stores.sqlite.connection import Connections, path_from_url
from merlin_tracking.stores.sqlite.filters import find_ids
from merlin_tracking.stores.sqlite.schema import SCHEMA_VERSION

R = TypeVar("R", bound=Record)

# Fields a restart refreshes from the new process (unless the caller set them explicitly).
_START_FIELDS = frozenset({"pid", "host", "status", "latest_start_time"})


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
        ns = self.prefix
        with self._db.transaction(write=True) as conn:
            existing = rows.id_by_unique(conn, ns, "study", study.name)
            if existing is not None:
                return existing, False
            while rows.exists(conn, ns, "study", study.id):
                fresh_id, created_at = new_id()
                study = study.replace(id=fresh_id, created_at=created_at)
            rows.insert(conn, ns, study.replace(runs=()))
            return study.id, True

    def create_run(self, run: Run, keep_id: bool = False) -> Run:
        study_id = run.study_id
        if study_id is None:
            raise InvalidRecordError("a new run needs a study_id")
        kept = run_sequence(run.id) if keep_id else None
        if keep_id and kept is None:
            raise InvalidRecordError(f"{run.id!r} is not a run id (r<number>)")
        ns = self.prefix
        with self._db.transaction(write=True) as conn:
            existing = rows.id_by_unique(conn, ns, "run", run.workspace)
            if existing is not None:
                raise DuplicateEntityError("run", "workspace", run.workspace, existing)
            if not rows.exists(conn, ns, "study", study_id):
                raise StudyNotFoundError(study_id, "it was deleted while the run was created")
            if kept is not None:
                if rows.exists(conn, ns, "run", run.id):
                    raise DuplicateEntityError("run", "id", run.id, run.id)
                rows.next_run_sequence(conn, ns, at_least=int(kept))
            else:
                run = run.replace(id=format_run_id(rows.next_run_sequence(conn, ns)))
                while rows.exists(conn, ns, "run", run.id):  # only if the counter was edited
                    run = run.replace(id=format_run_id(rows.next_run_sequence(conn, ns)))
            run = run.replace(workers=())  # attached below from the workers' queues
            rows.insert(conn, ns, run)
            workers = rows.link_consumers(conn, ns, run.id, run.queues)
            return run.replace(workers=sorted(workers))

    def add_run_queues(self, run_id: str, queues: Sequence[str]) -> Run:
        with self._db.transaction(write=True) as conn:
            run = rows.load(conn, self.prefix, Run, run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            rows.add_queues(conn, self.prefix, run, queues)
            return self._read_one(conn, Run, run_id)

    def create_logical_worker(self, worker: LogicalWorker) -> bool:
        with self._db.transaction(write=True) as conn:
            if rows.exists(conn, self.prefix, "logical_worker", worker.id):
                return False
            rows.insert(conn, self.prefix, worker.replace(runs=(), physical_workers=()))
            return True

    def upsert_physical_worker(
        self, candidate: PhysicalWorker, given: frozenset[str]
    ) -> tuple[PhysicalWorker, str]:
        ns = self.prefix
        lw = candidate.logical_worker_id
        with self._db.transaction(write=True) as conn:
            if lw and not rows.exists(conn, ns, "logical_worker", lw):
                raise WorkerNotFoundError(lw, "no logical worker has this id")
            existing = rows.id_by_unique(conn, ns, "physical_worker", candidate.name)
            stored = None if existing is None else rows.load(conn, ns, PhysicalWorker, existing)
            if stored is None:
                while rows.exists(conn, ns, "physical_worker", candidate.id):
                    fresh_id, created_at = new_id()
                    candidate = candidate.replace(id=fresh_id, created_at=created_at)
                rows.insert(conn, ns, candidate)
                return self._read_one(conn, PhysicalWorker, candidate.id), "created"
            updated, outcome = _upserted(stored, candidate, given)
            rows.update(conn, ns, stored, updated)
            return self._read_one(conn, PhysicalWorker, stored.id), outcome

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

    def apply_task_events(self, events: Sequence[TaskEvent], settle: float = 0.0) -> list[str]:
        if not events:
            return []
        with self._db.transaction(write=True) as conn:
            return progress.apply_task_events(conn, self.prefix, events, _now(), settle)

    def settle_runs(self) -> list[str]:
        # Every live worker calls this each heartbeat: take the write lock only when a run
        # actually changes (then look again under it).
        with self._db.transaction(write=False) as conn:
            if not progress.settled_changes(conn, self.prefix, _now()):
                return []
        with self._db.transaction(write=True) as conn:
            return progress.settle_runs(conn, self.prefix, _now())

    def change_publishing(self, run_id: str, delta: int) -> RunStatus | None:
        with self._db.transaction(write=True) as conn:
            run = rows.load(conn, self.prefix, Run, run_id)
            if run is None:
                return None
            now = _now()
            counted = run.replace(publishing=max(0, run.publishing + delta), updated_at=now)
            updated = counted.replace(status=progress.next_status(counted, now))
            rows.update(conn, self.prefix, run, updated)
            return updated.status

    def set_run_status(
        self, run_id: str, status: RunStatus, allowed_from: Sequence[RunStatus]
    ) -> tuple[bool, RunStatus]:
        with self._db.transaction(write=True) as conn:
            run = rows.load(conn, self.prefix, Run, run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            if run.status not in allowed_from:
                return False, run.status
            rows.update(conn, self.prefix, run, run.replace(status=status, updated_at=_now()))
            return True, run.status

    def attach_worker_to_runs(self, worker_id: str) -> list[str]:
        ns = self.prefix
        active = sorted(status.value for status in ACTIVE_STATUSES)
        with self._db.transaction(write=True) as conn:
            found = conn.execute(
                "SELECT DISTINCT q.run_id FROM lw_queue AS w "
                "JOIN run_queue AS q ON q.ns = w.ns AND q.queue = w.queue "
                "JOIN run AS r ON r.ns = q.ns AND r.id = q.run_id "
                "WHERE w.ns = ? AND w.worker_id = ? "
                f"AND r.status IN ({rows.marks(active)}) ORDER BY q.run_id",
                (ns, worker_id, *active),
            ).fetchall()
            return [str(run_id) for (run_id,) in found if rows.link(conn, ns, run_id, worker_id)]

    def heartbeat(self, worker_id: str, at: datetime) -> bool:
        stamp = PhysicalWorker.encode_field("heartbeat_timestamp", at)
        with self._db.transaction(write=True) as conn:
            cursor = conn.execute(
                "UPDATE physical_worker SET fields = json_set(fields, '$.heartbeat_timestamp', ?) "
                "WHERE ns = ? AND id = ?",
                (stamp, self.prefix, worker_id),
            )
            return cursor.rowcount > 0

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
            return _delete(conn, self.prefix, "run", run_ids)

    def delete_study(self, study_id: str, remove_runs: bool) -> bool:
        ns = self.prefix
        with self._db.transaction(write=True) as conn:
            if not rows.exists(conn, ns, "study", study_id):
                return False
            if remove_runs:
                conn.execute("DELETE FROM run WHERE ns = ? AND study_id = ?", (ns, study_id))
            else:  # kept, detached: study_id is a required field, stored as JSON null
                conn.execute(
                    "UPDATE run SET study_id = NULL, fields = json_set(fields, '$.study_id', 'null') "
                    "WHERE ns = ? AND study_id = ?",
                    (ns, study_id),
                )
            return _delete(conn, ns, "study", [study_id]) == 1

    def delete_logical_workers(self, worker_ids: Sequence[str]) -> int:
        if not worker_ids:
            return 0
        ns = self.prefix
        with self._db.transaction(write=True) as conn:
            # Links to runs and queue rows go by cascade; physical workers are detached here.
            for batch in rows.batches(worker_ids):
                conn.execute(
                    "UPDATE physical_worker SET logical_worker_id = NULL, "
                    "fields = json_remove(fields, '$.logical_worker_id') "
                    f"WHERE ns = ? AND logical_worker_id IN ({rows.marks(batch)})",
                    (ns, *batch),
                )
            return _delete(conn, ns, "logical_worker", worker_ids)

    def delete_physical_workers(self, worker_ids: Sequence[str]) -> int:
        if not worker_ids:
            return 0
        with self._db.transaction(write=True) as conn:
            return _delete(conn, self.prefix, "physical_worker", worker_ids)

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


def _upserted(
    stored: PhysicalWorker, candidate: PhysicalWorker, given: frozenset[str]
) -> tuple[PhysicalWorker, str]:
    """``stored`` updated by a new sighting of its name, and whether that was a restart.

    A different pid on a worker that had started before is a restart: ``restart_count`` + 1 and
    the start fields come from the new process. Explicitly given fields and the heartbeat are
    always set.
    """
    started = stored.pid is not None or stored.latest_start_time is not None
    restarted = candidate.pid is not None and started and candidate.pid != stored.pid
    changes: dict[str, Any] = {}
    if restarted:
        changes["restart_count"] = stored.restart_count + 1
        for name in sorted(_START_FIELDS - given):
            if getattr(candidate, name) is not None:
                changes[name] = getattr(candidate, name)
    for name in given | {"heartbeat_timestamp"}:
        if name in candidate.CODECS:
            changes[name] = getattr(candidate, name)
    if candidate.logical_worker_id:
        changes["logical_worker_id"] = candidate.logical_worker_id
    return stored.replace(**changes), "restarted" if restarted else "updated"


def _delete(conn: sqlite3.Connection, ns: str, entity: str, ids: Sequence[str]) -> int:
    deleted = 0
    for batch in rows.batches(ids):
        cursor = conn.execute(
            f"DELETE FROM {entity} WHERE ns = ? AND id IN ({rows.marks(batch)})", (ns, *batch)
        )
        deleted += cursor.rowcount
    return deleted
