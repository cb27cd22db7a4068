"""Task records read from the ``task`` table (written by ``progress``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from merlin_tracking.ids import micros_to_datetime
from merlin_tracking.records import Task
from merlin_tracking.records.status import TaskState
from merlin_tracking.records.task import LETTER_STATES, STATE_LETTERS
from merlin_tracking.stores.sqlite.progress import forget_waiting

_SELECT = (
    "SELECT run_id, id, state, attempts, name, queue, worker, queued_at, started_at, "
    "finished_at, error FROM task"
)


def _time(micros: int | None) -> datetime | None:
    return None if micros is None else micros_to_datetime(int(micros))


def _task(row: Any) -> Task:
    run_id, task_id, state, attempts, name, queue, worker, queued, started, finished, error = row
    times = [_time(t) for t in (queued, started, finished)]
    first = next((t for t in times if t is not None), None) or micros_to_datetime(0)
    return Task(
        id=str(task_id),
        run_id=str(run_id),
        state=LETTER_STATES[str(state)],
        attempts=int(attempts),
        name=name,
        queue=queue,
        worker=worker,
        queued_at=times[0],
        started_at=times[1],
        finished_at=times[2],
        error=error,
        created_at=first,
    )


def run_tasks(conn: sqlite3.Connection, ns: str, run_id: str) -> list[Task]:
    tasks = [
        _task(row) for row in conn.execute(f"{_SELECT} WHERE ns = ? AND run_id = ?", (ns, run_id))
    ]
    tasks.sort(key=lambda task: (task.created_at, task.id))
    return tasks


_COLUMNS = {"run_id": "run_id", "name": "name", "queue": "queue", "worker": "worker"}


def find_tasks(
    conn: sqlite3.Connection,
    ns: str,
    filters: Mapping[str, Sequence[str]],
    limit: int | None,
) -> list[Task]:
    """Records matching ``filters`` through the task indexes (by state, name, queue, worker,
    run), by run oldest first, then by first time and id."""
    where, params = ["t.ns = ?"], [ns]
    for key, values in filters.items():
        if key == "state":
            column, values = "state", [STATE_LETTERS[TaskState(v)] for v in values]
        else:
            column = _COLUMNS[key]
        where.append(f"t.{column} IN ({', '.join('?' * len(values))})")
        params += values
    sql = (
        "SELECT t.run_id, t.id, t.state, t.attempts, t.name, t.queue, t.worker, t.queued_at, "
        "t.started_at, t.finished_at, t.error FROM task AS t "
        "JOIN run AS r ON r.ns = t.ns AND r.id = t.run_id "
        f"WHERE {' AND '.join(where)} "
        "ORDER BY r.seq, COALESCE(t.queued_at, t.started_at, t.finished_at, 0), t.id"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [_task(row) for row in conn.execute(sql, params)]


def find_task(conn: sqlite3.Connection, ns: str, task_id: str) -> Task | None:
    row = conn.execute(
        f"{_SELECT} AS t WHERE ns = ? AND id = ? ORDER BY "
        "(SELECT r.seq FROM run AS r WHERE r.ns = t.ns AND r.id = t.run_id) DESC LIMIT 1",
        (ns, task_id),
    ).fetchone()
    return None if row is None else _task(row)


def delete_task(conn: sqlite3.Connection, ns: str, run_id: str, task_id: str) -> bool:
    row = conn.execute(
        "SELECT state, queue FROM task WHERE ns = ? AND run_id = ? AND id = ?",
        (ns, run_id, task_id),
    ).fetchone()
    if row is None:
        return False
    forget_waiting(conn, ns, run_id, str(row[0]), row[1])
    for table in ("task", "task_message"):
        conn.execute(
            f"DELETE FROM {table} WHERE ns = ? AND run_id = ? AND id = ?", (ns, run_id, task_id)
        )
    return True


def take_message(conn: sqlite3.Connection, ns: str, run_id: str, task_id: str) -> str | None:
    row = conn.execute(
        "SELECT m.message FROM task_message AS m JOIN task AS t ON t.ns = m.ns "
        "AND t.run_id = m.run_id AND t.id = m.id WHERE m.ns = ? AND m.run_id = ? AND m.id = ? "
        "AND t.state = 'L'",
        (ns, run_id, task_id),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "DELETE FROM task_message WHERE ns = ? AND run_id = ? AND id = ?", (ns, run_id, task_id)
    )
    return str(row[0])


def keep_message(
    conn: sqlite3.Connection, ns: str, run_id: str, task_id: str, message: str
) -> bool:
    if conn.execute("SELECT 1 FROM run WHERE ns = ? AND id = ?", (ns, run_id)).fetchone() is None:
        return False
    conn.execute(
        "INSERT OR REPLACE INTO task_message (ns, run_id, id, message) VALUES (?, ?, ?, ?)",
        (ns, run_id, task_id, message),
    )
    return True
