"""Dead and stopped workers: the work they held is lost, the runs they served are judged again.

The first reader or writer to notice a stale worker (``catch_up``) stores it STALLED, marks every
task it had received or started LOST, and judges again the runs those tasks and its queues
belong to (a run whose waiting tasks have no live consumer left is STALLED); its next heartbeat
makes it RUNNING again. A worker that shuts down hands its unfinished tasks over the same way.
Everything runs inside the caller's write transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime

from merlin_tracking.ids import datetime_to_micros
from merlin_tracking.records import PhysicalWorker, WorkerStatus
from merlin_tracking.records.events import TaskEvent, TaskEventKind
from merlin_tracking.stores.sqlite import progress, rows
from merlin_tracking.stores.sqlite.liveness import stalled_reason, worker_queues


def lose_tasks_of(
    conn: sqlite3.Connection, ns: str, node_name: str, reason: str, now: datetime
) -> list[str]:
    """Mark LOST every task ``node_name`` had received or started; return the runs touched."""
    held = conn.execute(
        "SELECT run_id, id FROM task WHERE ns = ? AND worker = ? AND state IN ('c', 's')",
        (ns, node_name),
    ).fetchall()
    at = datetime_to_micros(now)
    events = [
        TaskEvent(str(run_id), str(task_id), TaskEventKind.LOST, error=reason, at=at)
        for run_id, task_id in held
    ]
    progress.apply_task_events(conn, ns, events, now, 0.0)
    return sorted({event.run_id for event in events})


def worker_gone(
    conn: sqlite3.Connection, ns: str, worker: PhysicalWorker, reason: str, now: datetime
) -> None:
    """What a worker's death or shutdown changes: its tasks are lost, and the runs waiting on
    its queues may have no live consumer left."""
    lose_tasks_of(conn, ns, worker.name, reason, now)
    progress.refresh_runs(
        conn, ns, progress.active_runs_on_queues(conn, ns, worker_queues(conn, ns, worker)), now
    )


def reap(conn: sqlite3.Connection, ns: str, worker_ids: Iterable[str], now: datetime) -> list[str]:
    """Store STALLED for stale workers and hand their work over to ``worker_gone``."""
    reaped = []
    for worker_id in worker_ids:
        worker = rows.load(conn, ns, PhysicalWorker, worker_id)
        if worker is None or rows.with_liveness(worker, now).status is not WorkerStatus.STALLED:
            continue
        rows.update(conn, ns, worker, worker.replace(status=WorkerStatus.STALLED))
        worker_gone(conn, ns, worker, stalled_reason(worker, now), now)
        reaped.append(worker_id)
    return reaped
