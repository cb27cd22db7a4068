"""Lost work with real ``celery worker`` processes: killed workers and pool processes, tasks
handed back and run again, and a live worker whose task holds the interpreter lock.

Each test reads the ledger with a fresh ``TrackingDatabase`` with default settings: what it
sees is what any reader sees, with no monitor process running.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest

from merlin_tracking import RunStatus, TaskState, WorkerStatus
from tests.support.processes import (
    HEARTBEAT,
    STALE_AFTER,
    Ledger,
    Worker,
    exact,
    unique,
    wait_until,
)

pytestmark = pytest.mark.slow


def pool_children(worker: Worker) -> list[int]:
    """Pids of the worker's pool processes (its children that are not the beacon)."""
    found = []
    for task_dir in Path(f"/proc/{worker.pid}/task").iterdir():
        children = (task_dir / "children").read_text().split()
        for child in map(int, children):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"merlin_tracking.beacon" not in cmdline:
                found.append(child)
    return found


def task_in(ledger: Ledger, run_id: str, state: TaskState) -> object:
    tasks = ledger.db.tasks.get_all({"run_id": run_id, "state": state.value})
    return tasks[0] if tasks else None


def test_a_killed_solo_worker_loses_its_running_task(ledger: Ledger) -> None:
    victim, _ = ledger.start_running("solo")
    client = ledger.client()
    run = ledger.launch(client, client.signature("plain_app.sleeper", args=(60,)))
    started = wait_until(
        lambda: task_in(ledger, run.id, TaskState.STARTED), 30, "the task to start"
    )
    assert started.worker == victim.node  # type: ignore[attr-defined]
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    killed_at = time.monotonic()
    reader = ledger.db

    def lost() -> object:
        seen = reader.runs.get(run.id)  # no worker is alive: the read itself catches up
        return seen if seen.tasks_lost == 1 else None

    stalled = wait_until(lost, STALE_AFTER + 10, "the task to be lost")
    elapsed = time.monotonic() - killed_at
    assert STALE_AFTER - HEARTBEAT - 0.5 <= elapsed <= STALE_AFTER + 3, elapsed
    assert stalled.status is RunStatus.STALLED  # type: ignore[attr-defined]
    (task,) = reader.tasks.get_all({"run_id": run.id})
    assert task.state is TaskState.LOST and task.worker == victim.node
    assert task.error is not None
    assert task.error.startswith(f"worker {victim.node} stopped heartbeating at ")
    assert reader.physical_workers.get(victim.node).status is WorkerStatus.STALLED


def test_a_killed_pool_process_loses_its_task_and_the_worker_lives_on(ledger: Ledger) -> None:
    worker, record = ledger.start_running("prefork", concurrency=1)
    client = ledger.client()
    run = ledger.launch(client, client.signature("plain_app.sleeper", args=(60,)))
    wait_until(lambda: task_in(ledger, run.id, TaskState.STARTED), 30, "the task to start")
    (child,) = wait_until(lambda: pool_children(worker), 10, "the pool process")
    os.kill(child, signal.SIGKILL)

    def lost() -> object:
        task = task_in(ledger, run.id, TaskState.LOST)
        return task

    task = wait_until(lost, 30, "the task to be lost", on_timeout=worker.logs)
    assert "WorkerLostError" in task.error  # type: ignore[attr-defined]
    assert "SIGKILL" in task.error  # type: ignore[attr-defined]
    seen = ledger.db.runs.get(run.id)
    assert (seen.tasks_lost, seen.tasks_failed, seen.status) == (1, 0, RunStatus.STALLED)
    # The worker itself is fine: it stays RUNNING and serves the next task.
    assert ledger.db.physical_workers.get(record.id).status is WorkerStatus.RUNNING
    again = ledger.launch(client, client.signature("plain_app.noop"))
    assert ledger.wait_run(again.id, RunStatus.COMPLETED).counters == exact(1)


def test_a_task_handed_back_by_a_killed_worker_runs_again_and_counts_once(
    ledger: Ledger,
) -> None:
    """acks_late + reject_on_worker_lost: the message of a task whose worker died goes back to
    the queue (the Redis broker restores it after its visibility timeout) and another worker
    runs it. The ledger shows it LOST meanwhile, then running on the other worker, with one
    more attempt, and counts it once."""
    keyprefix = unique("broker") + ":"
    env = {"PLAIN_APP_VISIBILITY_TIMEOUT": "3", "PLAIN_APP_BROKER_KEYPREFIX": keyprefix}
    victim, _ = ledger.start_running("solo", env=env)
    client = ledger.client()
    client.conf.broker_transport_options = {"global_keyprefix": keyprefix}
    run = ledger.launch(client, client.signature("plain_app.careful_sleeper", args=(4,)))
    wait_until(lambda: task_in(ledger, run.id, TaskState.STARTED), 30, "the task to start")
    survivor, _ = ledger.start_running("solo", env=env)
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    done = ledger.wait_run(run.id, RunStatus.COMPLETED, timeout=60)
    assert done.counters == exact(1)
    (task,) = ledger.db.tasks.get_all({"run_id": run.id})
    assert (task.state, task.worker, task.attempts) == (
        TaskState.SUCCEEDED,
        survivor.node,
        2,
    )


def test_a_task_holding_the_interpreter_lock_does_not_stall_its_worker(ledger: Ledger) -> None:
    """A solo worker whose task holds the GIL for three times ``stale_after``: none of its
    threads runs meanwhile (its own task events wait too), yet every read says RUNNING."""
    worker, record = ledger.start_running("solo")
    client = ledger.client()
    window = 3 * STALE_AFTER
    run = ledger.launch(client, client.signature("plain_app.hold_gil", args=(window + 2,)))
    reader = ledger.db
    statuses, run_statuses, read_at = [], [], []
    deadline = time.monotonic() + 60
    while (seen := reader.runs.get(run.id)).status is not RunStatus.COMPLETED:
        assert time.monotonic() < deadline, worker.logs()
        run_statuses.append(seen.status)
        statuses.append(reader.physical_workers.get(record.id).status)
        read_at.append(time.monotonic())
        time.sleep(0.1)
    assert set(statuses) == {WorkerStatus.RUNNING}, statuses
    assert RunStatus.STALLED not in run_statuses, run_statuses
    # Read all along the hold: from before it passed stale_after until after three times that.
    assert read_at[-1] - read_at[0] >= window - 1.0, read_at
    assert max(b - a for a, b in itertools.pairwise(read_at)) < STALE_AFTER / 2
    assert seen.counters == exact(1)
    (task,) = reader.tasks.get_all({"run_id": run.id})
    assert task.duration is not None and task.duration >= window, task  # held long enough
    assert worker.proc.poll() is None
