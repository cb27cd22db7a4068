"""Worker liveness in SQL: live consumers of a queue, stale workers.

A RUNNING physical worker whose heartbeat is older than its ``stale_after`` reads STALLED;
``reaping`` acts on it. Everything runs inside the caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta

from merlin_tracking.ids import datetime_to_micros
from merlin_tracking.records import LogicalWorker, PhysicalWorker, WorkerStatus
from merlin_tracking.stores.sqlite import rows


def covered(conn: sqlite3.Connection, ns: str, queue: str | None, now: datetime) -> bool:
    """Whether a live worker consumes ``queue`` (an unknown queue counts as covered)."""
    if not queue:
        return True
    for worker_id, fields in conn.execute(
        "SELECT p.id, p.fields FROM lw_queue AS q JOIN physical_worker AS p "
        "ON p.ns = q.ns AND p.logical_worker_id = q.worker_id "
        "WHERE q.ns = ? AND q.queue = ? AND p.status = 'RUNNING'",
        (ns, queue),
    ):
        worker = PhysicalWorker.from_fields(str(worker_id), json.loads(fields))
        if rows.with_liveness(worker, now).status is WorkerStatus.RUNNING:
            return True
    return False


def stale_worker_ids(conn: sqlite3.Connection, ns: str, now: datetime) -> list[str]:
    """RUNNING workers whose liveness deadline has passed (not yet marked STALLED)."""
    return [
        str(worker_id)
        for (worker_id,) in conn.execute(
            "SELECT id FROM physical_worker WHERE ns = ? AND status = 'RUNNING' "
            "AND alive_until IS NOT NULL AND alive_until < ?",
            (ns, datetime_to_micros(now)),
        )
    ]


def worker_queues(conn: sqlite3.Connection, ns: str, worker: PhysicalWorker) -> list[str]:
    if worker.logical_worker_id is None:
        return []
    logical = rows.load(conn, ns, LogicalWorker, worker.logical_worker_id)
    return list(logical.queues) if logical is not None else []


def stalled_reason(worker: PhysicalWorker, now: datetime) -> str:
    """Why a stale worker's tasks are lost. Its allocation ended, rather than the worker, when
    the allocation's end has passed and lies within ``stale_after`` of the worker's last
    heartbeat (a scheduler kills its workers at the end, or a little after it). Lua twin:
    ``stale_reason`` in redis/lua/tasks.lua."""
    beat = worker.heartbeat_timestamp or worker.created_at
    reason = f"worker {worker.name} stopped heartbeating at {beat.isoformat(timespec='seconds')}"
    ends, window = worker.job_ends_at, timedelta(seconds=worker.stale_after or 0)
    if ends is not None and ends <= now and abs(ends - beat) <= window:
        ended = ends.isoformat(timespec="seconds")
        reason = f"allocation {worker.job_id} ({worker.scheduler}) ended at {ended}; {reason}"
    return reason
