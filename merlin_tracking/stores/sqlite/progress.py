"""Task events, run counters and the run state machine (the ``task_events`` script in SQL).

Events of one process arrive in order, events of different processes interleave, so every kind
is accepted in any state and each task id counts once per counter. The per-task state letters
match the Redis store: q queued, r requeued after a start (retry), s started, S/F/R succeeded,
failed or revoked. Everything runs inside the caller's write transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from merlin_tracking.ids import datetime_to_micros
from merlin_tracking.records import Run, RunStatus
from merlin_tracking.records.events import TaskEvent, TaskEventKind
from merlin_tracking.records.run import ACTIVE_STATUSES, COUNTERS
from merlin_tracking.stores.sqlite import rows

_FINAL = {
    TaskEventKind.SUCCEEDED: "S",
    TaskEventKind.FAILED: "F",
    TaskEventKind.REVOKED: "R",
}
_UNFINISHED = ("q", "r", "s")


def next_status(
    run: Run, now: datetime, published: bool = False, started: bool = False
) -> RunStatus:
    """Status implied by the counters.

    QUEUED on publish, RUNNING on start, FAILED on a failure, COMPLETED once every counted task
    finished without failure, no launch is still publishing and ``settle_until`` (tasks
    received at a worker) has passed. FAILED and CANCELLED are never left; a COMPLETED run
    reopens (RUNNING) when new tasks join it.
    """
    old = run.status
    reopened = (
        old is RunStatus.COMPLETED and run.tasks_succeeded + run.tasks_revoked < run.tasks_queued
    )
    if old not in ACTIVE_STATUSES and not reopened:
        return old
    if run.tasks_failed > 0:
        return RunStatus.FAILED
    if (
        run.tasks_queued > 0
        and run.publishing <= 0
        and run.tasks_succeeded + run.tasks_revoked >= run.tasks_queued
        and (run.settle_until is None or run.settle_until <= now)
    ):
        return RunStatus.COMPLETED
    if started or run.tasks_started > 0:
        return RunStatus.RUNNING
    if (published or run.tasks_queued > 0) and old is RunStatus.INITIALIZED:
        return RunStatus.QUEUED
    return old


@dataclasses.dataclass
class _Progress:
    """One run's changes while a batch of events is applied."""

    run: Run
    counters: dict[str, int]
    states: dict[str, str] = dataclasses.field(default_factory=dict)
    changed: set[str] = dataclasses.field(default_factory=set)
    published: bool = False
    started: bool = False
    received: bool = False

    def bump(self, counter: str) -> None:
        self.counters[f"tasks_{counter}"] += 1


def _state(conn: sqlite3.Connection, ns: str, progress: _Progress, task_id: str) -> str | None:
    if task_id not in progress.states:
        row = conn.execute(
            "SELECT state FROM task_state WHERE ns = ? AND run_id = ? AND task_id = ?",
            (ns, progress.run.id, task_id),
        ).fetchone()
        if row is None:
            return None
        progress.states[task_id] = str(row[0])
    return progress.states[task_id]


def _apply(conn: sqlite3.Connection, ns: str, progress: _Progress, event: TaskEvent) -> None:
    state = _state(conn, ns, progress, event.task_id)
    if state is None:
        progress.bump("queued")
        state = "q"
    kind = event.kind
    if kind is TaskEventKind.RECEIVED:
        progress.received = True
        kind = TaskEventKind.PUBLISHED
    if kind in (TaskEventKind.PUBLISHED, TaskEventKind.RETRIED):
        if kind is TaskEventKind.RETRIED:
            progress.bump("retried")
            if state in ("s", "r"):
                state = "r"
        if event.queue:
            progress.run = rows.add_queues(conn, ns, progress.run, [event.queue])
        progress.published = True
    elif kind in (TaskEventKind.STARTED, TaskEventKind.RAN):
        if state == "q":
            progress.bump("started")
        if state in ("q", "r"):
            state = "s"
        progress.started = True
        if kind is TaskEventKind.RAN:  # started and succeeded, coalesced by the sender
            kind = TaskEventKind.SUCCEEDED
    if kind in _FINAL and state in _UNFINISHED:
        if state == "q" and kind is not TaskEventKind.REVOKED:
            progress.bump("started")
        progress.bump(kind.value)
        state = _FINAL[kind]
    progress.states[event.task_id] = state
    progress.changed.add(event.task_id)


def apply_task_events(
    conn: sqlite3.Connection,
    ns: str,
    events: Sequence[TaskEvent],
    now: datetime,
    settle: float = 0.0,
) -> list[str]:
    """Apply ``events`` in order; return the ids of missing runs (their events are dropped).
    A run with RECEIVED events may not complete before ``now + settle`` seconds."""
    touched: dict[str, _Progress] = {}
    missing: dict[str, None] = {}
    for event in events:
        progress = touched.get(event.run_id)
        if progress is None:
            if event.run_id in missing:
                continue
            run = rows.load(conn, ns, Run, event.run_id)
            if run is None:
                missing[event.run_id] = None
                continue
            counters = {f"tasks_{name}": getattr(run, f"tasks_{name}") for name in COUNTERS}
            progress = touched[event.run_id] = _Progress(run, counters)
        _apply(conn, ns, progress, event)
    for progress in touched.values():
        conn.executemany(
            "INSERT OR REPLACE INTO task_state (ns, run_id, task_id, state) VALUES (?, ?, ?, ?)",
            [(ns, progress.run.id, task, progress.states[task]) for task in progress.changed],
        )
        counted = progress.run.replace(**progress.counters)
        if progress.received and settle > 0:
            counted = counted.replace(settle_until=now + timedelta(seconds=settle))
        status = next_status(counted, now, progress.published, progress.started)
        rows.update(conn, ns, progress.run, counted.replace(status=status, updated_at=now))
    return list(missing)


def settled_changes(
    conn: sqlite3.Connection, ns: str, now: datetime
) -> list[tuple[Run, RunStatus]]:
    """Active runs whose ``settle_until`` has passed and whose status that changes, with the
    new status (the SQL twin of the ``settle_runs`` script's test)."""
    placeholders = ", ".join("?" for _ in ACTIVE_STATUSES)
    until = "CAST(json_extract(fields, '$.settle_until') AS INTEGER)"
    ids = [
        str(row[0])
        for row in conn.execute(
            f"SELECT id FROM run WHERE ns = ? AND status IN ({placeholders}) AND {until} <= ?",
            (ns, *(status.value for status in ACTIVE_STATUSES), datetime_to_micros(now)),
        )
    ]
    changes = []
    for run_id in ids:
        run = rows.load(conn, ns, Run, run_id)
        if run is not None:
            status = next_status(run, now)
            if status is not run.status:
                changes.append((run, status))
    return changes


def settle_runs(conn: sqlite3.Connection, ns: str, now: datetime) -> list[str]:
    """Apply ``settled_changes``; return the ids of the runs that completed."""
    completed = []
    for run, status in settled_changes(conn, ns, now):
        rows.update(conn, ns, run, run.replace(status=status, updated_at=now))
        if status is RunStatus.COMPLETED:
            completed.append(run.id)
    return completed
