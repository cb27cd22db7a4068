"""Creating records: unique names and workspaces, fresh ids on a clash, and the worker upsert.

Every function works inside the write transaction the store holds (see ``store.py``) and is
scoped to one ``ns``; ``check_new_run`` alone runs before it, on the arguments only. A generated
id that is already stored is replaced by a fresh one until one is free.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from merlin_tracking.errors import (
    DuplicateEntityError,
    InvalidRecordError,
    StudyNotFoundError,
    WorkerNotFoundError,
)
from merlin_tracking.ids import new_id, run_sequence
from merlin_tracking.ids import run_id as format_run_id
from merlin_tracking.records import LogicalWorker, PhysicalWorker, Run, Study
from merlin_tracking.stores.sqlite import rows

# Fields a restart refreshes from the new process (unless the caller set them explicitly).
_START_FIELDS = frozenset({"pid", "host", "status", "latest_start_time"})


def create_study(conn: sqlite3.Connection, ns: str, study: Study) -> tuple[str, bool]:
    """The id of the study named ``study.name`` and whether it was created now."""
    existing = rows.id_by_unique(conn, ns, "study", study.name)
    if existing is not None:
        return existing, False
    while rows.exists(conn, ns, "study", study.id):
        fresh_id, created_at = new_id()
        study = study.replace(id=fresh_id, created_at=created_at)
    rows.insert(conn, ns, study.replace(runs=()))
    return study.id, True


def check_new_run(run: Run, keep_id: bool, study: Study | None = None) -> tuple[str, str | None]:
    """The new run's study id (``""`` when ``study`` names it) and, with ``keep_id``, the
    sequence of its id (else None).

    Checks the arguments alone, before any transaction: ``InvalidRecordError`` if the run has
    no study or ``keep_id`` is asked for an id that is not a run id.
    """
    study_id = "" if study is not None else run.study_id
    if study_id is None:
        raise InvalidRecordError("a new run needs a study_id")
    kept = run_sequence(run.id) if keep_id else None
    if keep_id and kept is None:
        raise InvalidRecordError(f"{run.id!r} is not a run id (r<number>)")
    return study_id, kept


def create_run(conn: sqlite3.Connection, ns: str, run: Run, study_id: str, kept: str | None) -> Run:
    """The run as stored, under the kept id or the next free one, with the workers of its queues.

    ``study_id`` and ``kept`` come from ``check_new_run``.
    """
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


def create_logical_worker(conn: sqlite3.Connection, ns: str, worker: LogicalWorker) -> bool:
    """Whether the worker was created now (False: its id was already stored)."""
    if rows.exists(conn, ns, "logical_worker", worker.id):
        return False
    rows.insert(conn, ns, worker.replace(runs=(), physical_workers=()))
    return True


def upsert_physical_worker(
    conn: sqlite3.Connection, ns: str, candidate: PhysicalWorker, given: frozenset[str]
) -> tuple[str, str]:
    """The stored worker's id and "created", "restarted" or "updated"."""
    lw = candidate.logical_worker_id
    if lw and not rows.exists(conn, ns, "logical_worker", lw):
        raise WorkerNotFoundError(lw, "no logical worker has this id")
    existing = rows.id_by_unique(conn, ns, "physical_worker", candidate.name)
    stored = None if existing is None else rows.load(conn, ns, PhysicalWorker, existing)
    if stored is None:
        while rows.exists(conn, ns, "physical_worker", candidate.id):
            fresh_id, created_at = new_id()
            candidate = candidate.replace(id=fresh_id, created_at=created_at)
        rows.insert(conn, ns, candidate)
        return candidate.id, "created"
    updated, outcome = _upserted(stored, candidate, given)
    rows.update(conn, ns, stored, updated)
    return stored.id, outcome


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
