"""The JSON objects the command line prints (schema in ``docs/cli.md``) and the lookups they need.

Each object is the record's ``to_dict()`` (ISO timestamps, enum values, lists) plus a few derived
fields, always present, so scripts can rely on every key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from merlin_tracking.cli.output import utcnow
from merlin_tracking.database import TrackingDatabase
from merlin_tracking.ids import id_sort_key
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Run,
    Study,
    Task,
    WorkerStatus,
)


def progress(run: Run) -> float | None:
    """Finished tasks / queued tasks, between 0 and 1; None before any task is queued."""
    if not run.tasks_queued:
        return None
    return min(1.0, run.tasks_finished / run.tasks_queued)


def elapsed_seconds(run: Run, now: datetime | None = None) -> float:
    """The run's duration: from its first task's start to its last task's end, or to now while
    it is active. Settling and later bookkeeping never move it (a run of 0.1 s of work reads
    0.1 s). A run without ``started_at`` (no task started, or recorded before it was kept)
    counts from its creation; a finished run without ``finished_at`` ends at its last update."""
    start = run.started_at or run.created_at
    if run.is_active:
        end = now or utcnow()
    else:
        end = run.finished_at or run.updated_at
    return max(0.0, (end - start).total_seconds())


def is_settling(run: Run, now: datetime | None = None) -> bool:
    """Active and inside its settle delay: tasks were counted at workers, so more may still
    arrive and the run completes no earlier than ``settle_until``."""
    return run.is_active and run.settle_until is not None and run.settle_until > (now or utcnow())


def run_document(run: Run, study_name: str | None, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    return {
        **run.to_dict(),
        "study_name": study_name,
        "counters": run.counters,
        "tasks_finished": run.tasks_finished,
        "progress": progress(run),
        "active": run.is_active,
        "settling": is_settling(run, now),
        "elapsed_seconds": round(elapsed_seconds(run, now), 3),
    }


def task_document(task: Task) -> dict[str, Any]:
    """A task record's ``to_dict()`` plus ``duration_seconds`` (start to end, null unless both
    are known)."""
    duration = task.duration
    return {
        **task.to_dict(),
        "duration_seconds": None if duration is None else round(duration, 3),
    }


def is_alive(worker: PhysicalWorker) -> bool:
    """RUNNING with a fresh heartbeat (a RUNNING worker whose liveness expired reads STALLED)."""
    return worker.status is WorkerStatus.RUNNING


def physical_document(worker: PhysicalWorker) -> dict[str, Any]:
    return {**worker.to_dict(), "alive": is_alive(worker)}


def allocation_documents(workers: Iterable[PhysicalWorker]) -> list[dict[str, Any]]:
    """The batch allocations live workers run in: ``{scheduler, job_id, job_name, job_ends_at,
    live_workers}``, soonest end first (unknown ends last)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for worker in workers:
        if worker.job_id is None or not is_alive(worker):
            continue
        key = (worker.scheduler or "", worker.job_id)
        entry = found.setdefault(
            key,
            {
                "scheduler": worker.scheduler,
                "job_id": worker.job_id,
                "job_name": worker.job_name,
                "job_ends_at": worker.job_ends_at.isoformat() if worker.job_ends_at else None,
                "live_workers": 0,
            },
        )
        entry["live_workers"] += 1
    return sorted(found.values(), key=lambda a: (a["job_ends_at"] is None, a["job_ends_at"] or ""))


def logical_document(worker: LogicalWorker, physical: Sequence[PhysicalWorker]) -> dict[str, Any]:
    """``physical``: the physical workers of this logical worker, to count the live ones."""
    live = sum(1 for pw in physical if pw.logical_worker_id == worker.id and is_alive(pw))
    return {**worker.to_dict(), "live_physical_workers": live}


def study_document(study: Study) -> dict[str, Any]:
    return study.to_dict()


def study_names(db: TrackingDatabase, runs: Iterable[Run]) -> dict[str, str]:
    """Study id -> name for the studies of ``runs`` (one round trip)."""
    ids = sorted({run.study_id for run in runs if run.study_id})
    return {study.id: study.name for study in db.studies.get_many(ids)}


def run_documents(db: TrackingDatabase, runs: Sequence[Run]) -> list[dict[str, Any]]:
    names = study_names(db, runs)
    now = utcnow()
    return [run_document(run, names.get(run.study_id or ""), now) for run in runs]


def newest_first(runs: Iterable[Run]) -> list[Run]:
    return sorted(runs, key=lambda run: (run.created_at, id_sort_key(run.id)), reverse=True)
