"""Task events, the task ledger and run status, in SQL: the rules of ``stores/rules.py``.

Everything runs inside the caller's write transaction. Task rows live in ``task``; how many
tasks of a run wait on each queue lives in ``run_waiting`` (a run whose waiting tasks sit only
on queues no live worker consumes is STALLED, see ``liveness.covered``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from merlin_tracking.ids import datetime_to_micros, micros_to_datetime
from merlin_tracking.records import Run, RunStatus
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.records.run import ACTIVE_STATUSES, COUNTERS
from merlin_tracking.stores import rules
from merlin_tracking.stores.sqlite import liveness, rows

_TASK_COLUMNS = "state, attempts, name, queue, worker, queued_at, started_at, finished_at, error"


def _load_rows(
    conn: sqlite3.Connection, ns: str, run_id: str, task_ids: Iterable[str]
) -> dict[str, rules.TaskRow]:
    found: dict[str, rules.TaskRow] = {}
    for batch in rows.batches(task_ids):
        for task_id, *values in conn.execute(
            f"SELECT id, {_TASK_COLUMNS} FROM task WHERE ns = ? AND run_id = ? "
            f"AND id IN ({rows.marks(batch)})",
            (ns, run_id, *batch),
        ):
            found[str(task_id)] = rules.TaskRow(*values)
    return found


def _store_rows(
    conn: sqlite3.Connection, ns: str, run_id: str, changed: dict[str, rules.TaskRow]
) -> None:
    conn.executemany(
        f"INSERT OR REPLACE INTO task (ns, run_id, id, {_TASK_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                ns,
                run_id,
                task_id,
                r.state,
                r.attempts,
                r.name,
                r.queue,
                r.worker,
                r.queued_at,
                r.started_at,
                r.finished_at,
                r.error,
            )
            for task_id, r in changed.items()
        ],
    )


def _count_waiting(
    waiting: dict[str, int], before: tuple[str, str | None] | None, after: rules.TaskRow
) -> None:
    """Move a task between the per-queue waiting counts when its state or queue changed."""
    if before is not None and before[0] in rules.WAITING:
        key = before[1] or ""
        waiting[key] = waiting.get(key, 0) - 1
    if after.state in rules.WAITING:
        key = after.queue or ""
        waiting[key] = waiting.get(key, 0) + 1


def _store_waiting(conn: sqlite3.Connection, ns: str, run_id: str, waiting: dict[str, int]) -> None:
    for queue, delta in waiting.items():
        if delta:
            conn.execute(
                "INSERT INTO run_waiting (ns, run_id, queue, n) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (ns, run_id, queue) DO UPDATE SET n = n + excluded.n",
                (ns, run_id, queue, delta),
            )
    conn.execute("DELETE FROM run_waiting WHERE ns = ? AND run_id = ? AND n <= 0", (ns, run_id))


def _store_messages(
    conn: sqlite3.Connection,
    ns: str,
    run_id: str,
    events: Sequence[TaskEvent],
    rows_now: dict[str, rules.TaskRow],
    before: dict[str, tuple[str, str | None]],
) -> None:
    """A kept message (``tracking_keep_messages``) stays until its task finishes."""
    kept = {e.task_id: e.message for e in events if e.message is not None}
    for task_id, row in rows_now.items():
        if row.state in rules.FINAL_COUNTER:
            if before.get(task_id, ("q", None))[0] not in rules.FINAL_COUNTER:
                conn.execute(
                    "DELETE FROM task_message WHERE ns = ? AND run_id = ? AND id = ?",
                    (ns, run_id, task_id),
                )
        elif task_id in kept:
            conn.execute(
                "INSERT OR REPLACE INTO task_message (ns, run_id, id, message) VALUES (?, ?, ?, ?)",
                (ns, run_id, task_id, kept[task_id]),
            )


def forget_waiting(
    conn: sqlite3.Connection, ns: str, run_id: str, state: str, queue: str | None
) -> None:
    """A task record in ``state`` on ``queue`` leaves the run's waiting counts (deleted)."""
    if state in rules.WAITING:
        _store_waiting(conn, ns, run_id, {queue or "": -1})


def apply_task_events(
    conn: sqlite3.Connection,
    ns: str,
    events: Sequence[TaskEvent],
    now: datetime,
    settle: float,
    workspaces: Mapping[str, str] | None = None,
) -> list[str]:
    """Apply ``events`` in order; return the ids of missing runs (their events are dropped),
    a run whose workspace is not the one ``workspaces`` names for it included.
    A run with tasks first counted at a worker may not complete before ``now + settle``."""
    now_us = datetime_to_micros(now)
    by_run: dict[str, list[TaskEvent]] = {}
    missing: dict[str, None] = {}
    for event in events:
        by_run.setdefault(event.run_id, []).append(event)
    for run_id, run_events in by_run.items():
        run = rows.load(conn, ns, Run, run_id)
        expected = (workspaces or {}).get(run_id)
        if run is None or (expected is not None and run.workspace != expected):
            missing[run_id] = None
            continue
        stored = _load_rows(conn, ns, run_id, dict.fromkeys(e.task_id for e in run_events))
        before = {task_id: (row.state, row.queue) for task_id, row in stored.items()}
        tally = rules.RunTally({name: getattr(run, f"tasks_{name}") for name in COUNTERS})
        current: dict[str, rules.TaskRow] = dict(stored)
        for event in run_events:
            current[event.task_id] = rules.apply_event(
                current.get(event.task_id), event, tally, now_us
            )
        waiting: dict[str, int] = {}
        for task_id, row in current.items():
            if before.get(task_id) != (row.state, row.queue):
                _count_waiting(waiting, before.get(task_id), row)
        _store_rows(conn, ns, run_id, current)
        _store_waiting(conn, ns, run_id, waiting)
        _store_messages(conn, ns, run_id, run_events, current, before)
        joined = [e.queue for e in run_events if e.queue and e.kind in rules.JOINS_QUEUE]
        if joined:
            run = rows.add_queues(conn, ns, run, joined)
        counted = run.replace(
            **{f"tasks_{name}": tally.counters[name] for name in COUNTERS},
            updated_at=now,
        )
        if tally.started_at is not None:
            first = micros_to_datetime(tally.started_at)
            counted = counted.replace(started_at=min(first, run.started_at or first))
        if tally.settle and settle > 0:
            counted = counted.replace(settle_until=now + timedelta(seconds=settle))
        if tally.ends:
            counted = counted.replace(settle_until=None)
        last = None if tally.last_finish is None else micros_to_datetime(tally.last_finish)
        refresh(conn, ns, run, counted, now, last)
    return list(missing)


def refresh(
    conn: sqlite3.Connection,
    ns: str,
    stored: Run,
    run: Run,
    now: datetime,
    last_finish: datetime | None = None,
    status: RunStatus | None = None,
) -> Run:
    """Store ``run`` (``stored`` changed) with the status its counters give it (or ``status``,
    set by hand), its end time and its task records' expiry; return it as stored."""
    if status is None:
        in_flight, waiting = _in_flight_and_waiting(conn, ns, run.id)
        facts = rules.RunFacts(
            run.status.value,
            run.counters,
            run.publishing,
            None if run.settle_until is None else datetime_to_micros(run.settle_until),
            in_flight,
            waiting,
        )
        status = RunStatus(
            rules.next_status(
                facts,
                datetime_to_micros(now),
                lambda queue: liveness.covered(conn, ns, queue, now),
            )
        )
    updated = run.replace(status=status)
    was_active, active = stored.status in ACTIVE_STATUSES, status in ACTIVE_STATUSES
    if run.settle_until is not None and (not active or run.settle_until <= now):
        updated = updated.replace(settle_until=None)  # waited long enough (or nothing to wait for)
    if active:
        updated = updated.replace(finished_at=None)
    else:
        ends = [t for t in (stored.finished_at, last_finish) if t is not None]
        if was_active and status is not RunStatus.CANCELLED:
            ends.extend(_last_task_finish(conn, ns, run.id))
        updated = updated.replace(finished_at=max(ends) if ends else now)
    rows.update(conn, ns, stored, updated)
    if (status is RunStatus.COMPLETED) != (stored.status is RunStatus.COMPLETED):
        _set_tasks_expiry(conn, ns, updated, now)
    return updated


def _in_flight_and_waiting(
    conn: sqlite3.Connection, ns: str, run_id: str
) -> tuple[int, list[str | None]]:
    (in_flight,) = conn.execute(
        "SELECT count(*) FROM task WHERE ns = ? AND run_id = ? AND state IN ('c', 's')",
        (ns, run_id),
    ).fetchone()
    waiting = [
        str(queue) or None
        for (queue,) in conn.execute(
            "SELECT queue FROM run_waiting WHERE ns = ? AND run_id = ? AND n > 0", (ns, run_id)
        )
    ]
    return int(in_flight), waiting


def _last_task_finish(conn: sqlite3.Connection, ns: str, run_id: str) -> list[datetime]:
    (last,) = conn.execute(
        "SELECT max(finished_at) FROM task WHERE ns = ? AND run_id = ?", (ns, run_id)
    ).fetchone()
    return [] if last is None else [micros_to_datetime(int(last))]


def _set_tasks_expiry(conn: sqlite3.Connection, ns: str, run: Run, now: datetime) -> None:
    """A COMPLETED run keeps its task records ``task_retention`` seconds (0: dropped now); one
    that left COMPLETED (new tasks joined it) keeps them for good. FAILED and CANCELLED runs
    keep theirs: they say what went wrong, and their tasks may still report."""
    expire_at = None
    if run.status is RunStatus.COMPLETED and run.task_retention is not None:
        if run.task_retention == 0:
            drop_tasks(conn, ns, [run.id])
        else:
            expire_at = datetime_to_micros(now + timedelta(seconds=run.task_retention))
    conn.execute(
        "UPDATE run SET tasks_expire_at = ? WHERE ns = ? AND id = ?", (expire_at, ns, run.id)
    )


def drop_tasks(
    conn: sqlite3.Connection, ns: str, run_ids: Sequence[str], expired: bool = False
) -> None:
    """Delete the task records of runs (their counters stay); ``expired``: their retention
    ran out, so their expiry is cleared too."""
    for batch in rows.batches(run_ids):
        marks = rows.marks(batch)
        for table in ("task", "run_waiting", "task_message"):
            conn.execute(f"DELETE FROM {table} WHERE ns = ? AND run_id IN ({marks})", (ns, *batch))
        if expired:
            conn.execute(
                f"UPDATE run SET tasks_expire_at = NULL WHERE ns = ? AND id IN ({marks})",
                (ns, *batch),
            )


def expired_task_runs(conn: sqlite3.Connection, ns: str, now: datetime) -> list[str]:
    """Runs whose task records have outlived their retention."""
    return [
        str(run_id)
        for (run_id,) in conn.execute(
            "SELECT id FROM run WHERE ns = ? AND tasks_expire_at IS NOT NULL "
            "AND tasks_expire_at <= ?",
            (ns, datetime_to_micros(now)),
        )
    ]


def set_status(
    conn: sqlite3.Connection, ns: str, run: Run, status: RunStatus, now: datetime
) -> Run:
    """Store a status set by hand (cancel, update), with the end time and expiry it implies."""
    return refresh(conn, ns, run, run.replace(updated_at=now), now, status=status)


def refresh_runs(conn: sqlite3.Connection, ns: str, run_ids: Iterable[str], now: datetime) -> None:
    """Judge the status of these runs again (liveness changed under them)."""
    for run_id in sorted(set(run_ids)):
        run = rows.load(conn, ns, Run, run_id)
        if run is not None and run.status in ACTIVE_STATUSES:
            refresh(conn, ns, run, run, now)


def active_runs_on_queues(conn: sqlite3.Connection, ns: str, queues: Iterable[str]) -> list[str]:
    """Ids of the active runs that use one of ``queues``."""
    active = sorted(status.value for status in ACTIVE_STATUSES)
    found: set[str] = set()
    for batch in rows.batches(queues):
        found.update(
            str(run_id)
            for (run_id,) in conn.execute(
                "SELECT q.run_id FROM run_queue AS q JOIN run AS r ON r.ns = q.ns AND r.id = q.run_id "
                f"WHERE q.ns = ? AND q.queue IN ({rows.marks(batch)}) "
                f"AND r.status IN ({rows.marks(active)})",
                (ns, *batch, *active),
            )
        )
    return sorted(found)


def settled_changes(conn: sqlite3.Connection, ns: str, now: datetime) -> list[str]:
    """Runs whose ``settle_until`` has passed (they may complete now). Only active runs keep
    one: it is cleared when it passes or the run ends."""
    return [
        str(row[0])
        for row in conn.execute(
            "SELECT id FROM run WHERE ns = ? AND settle_at IS NOT NULL AND settle_at <= ?",
            (ns, datetime_to_micros(now)),
        )
    ]


def anything_due(conn: sqlite3.Connection, ns: str, now: datetime) -> bool:
    """Whether ``catch_up`` has work: a stale worker, a passed settle time or expired task
    records (one indexed probe each, in one statement)."""
    at = datetime_to_micros(now)
    (due,) = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM physical_worker WHERE ns = :ns AND alive_until < :at "
        "AND status = 'RUNNING') OR EXISTS (SELECT 1 FROM run WHERE ns = :ns AND settle_at <= :at) "
        "OR EXISTS (SELECT 1 FROM run WHERE ns = :ns AND tasks_expire_at <= :at)",
        {"ns": ns, "at": at},
    ).fetchone()
    return bool(due)


def settle_runs(
    conn: sqlite3.Connection, ns: str, now: datetime, run_ids: Sequence[str]
) -> list[str]:
    """Judge the runs whose settle time passed again; return the ids of those that completed."""
    completed = []
    for run_id in run_ids:
        run = rows.load(conn, ns, Run, run_id)
        if run is None or run.status not in ACTIVE_STATUSES:
            continue
        updated = refresh(conn, ns, run, run, now)
        if updated.status is not run.status:
            rows.update(conn, ns, updated, updated.replace(updated_at=now))
        if updated.status is RunStatus.COMPLETED:
            completed.append(run_id)
    return completed
