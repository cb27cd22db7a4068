"""The task ledger on both stores: task records, lost work, STALLED runs, redelivery, the
orders in which a worker's main process and pool child report one task, retention, reads."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merlin_tracking import (
    InvalidFilterError,
    RunStatus,
    TaskNotFoundError,
    TaskState,
    TrackingDatabase,
    WorkerStatus,
)
from merlin_tracking.records.events import COUNTED_AT_WORKER, ENDS_RUN, TaskEvent, TaskEventKind
from merlin_tracking.records.task import ERROR_LIMIT, clip_error

K = TaskEventKind
T0 = 1_800_000_000_000_000  # event times: microseconds since the epoch


def at(ms: int) -> int:
    return T0 + ms * 1000


def moment(ms: int) -> datetime:
    return datetime.fromtimestamp(at(ms) / 1_000_000, timezone.utc)


def worker(db: TrackingDatabase, node: str, queues: list[str], **fields: object) -> str:
    logical = db.logical_workers.create(node.split("@")[0], queues)
    db.physical_workers.create(node, pid=1, logical_worker_id=logical.id, **fields)  # type: ignore[arg-type]
    db.logical_workers.attach_to_active_runs(logical.id)
    return logical.id


def ev(run_id: str, task: str, kind: TaskEventKind, ms: int = 0, **fields: object) -> TaskEvent:
    return TaskEvent(run_id, task, kind, at=at(ms), **fields)  # type: ignore[arg-type]


def test_a_task_record_follows_its_task(db: TrackingDatabase) -> None:
    worker(db, "w1@n", ["sim"])
    run = db.runs.create("s", "/ws", [])
    db.runs.record_events([ev(run.id, "t", K.PUBLISHED, 0, queue="sim", name="app.simulate")])
    queued = db.tasks.get("t")
    assert (queued.state, queued.queue, queued.name, queued.worker) == (
        TaskState.QUEUED,
        "sim",
        "app.simulate",
        None,
    )
    assert queued.queued_at == moment(0) and queued.attempts == 0 and queued.run_id == run.id
    db.runs.record_events([ev(run.id, "t", K.RECEIVED, 5, queue="sim", worker="w1@n")])
    assert (db.tasks.get("t").state, db.tasks.get("t").worker) == (TaskState.RECEIVED, "w1@n")
    db.runs.record_events([ev(run.id, "t", K.STARTED, 10, worker="w1@n")])
    started = db.tasks.get("t", run.id)
    assert (started.state, started.attempts, started.started_at) == (
        TaskState.STARTED,
        1,
        moment(10),
    )
    db.runs.record_events([ev(run.id, "t", K.SUCCEEDED, 250, worker="w1@n")])
    done = db.tasks.get("t")
    assert (done.state, done.finished_at, done.duration, done.error) == (
        TaskState.SUCCEEDED,
        moment(250),
        0.24,
        None,
    )
    finished = db.runs.get(run.id)
    assert finished.status is RunStatus.COMPLETED
    assert (finished.started_at, finished.finished_at) == (moment(10), moment(250))


def test_a_failure_says_which_task_failed_and_why(db: TrackingDatabase) -> None:
    worker(db, "w1@n", ["q"])
    run = db.runs.create("s", "/ws", ["q"])
    error = clip_error("ValueError: " + "é" * 3000)
    db.runs.record_events(
        [
            ev(run.id, "ok", K.PUBLISHED, queue="q"),
            ev(run.id, "bad", K.PUBLISHED, queue="q"),
            ev(run.id, "bad", K.STARTED, 1, worker="w1@n"),
            ev(run.id, "bad", K.FAILED, 2, worker="w1@n", error=error),
        ]
    )
    assert db.runs.get(run.id).status is RunStatus.FAILED
    (failed,) = db.tasks.get_all({"run_id": run.id, "state": "failed"})
    assert failed.id == "bad" and failed.error is not None
    assert failed.error.startswith("ValueError: é") and len(failed.error.encode()) <= ERROR_LIMIT


def test_a_stopped_worker_loses_what_it_held_and_the_run_stalls(db: TrackingDatabase) -> None:
    worker(db, "w1@n", ["q"])
    worker(db, "w2@n", ["other"])
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(
        [
            ev(run.id, "a", K.PUBLISHED, queue="q"),
            ev(run.id, "b", K.PUBLISHED, queue="q"),
            ev(run.id, "c", K.PUBLISHED, queue="q"),
            ev(run.id, "a", K.RECEIVED, 1, queue="q", worker="w1@n"),
            ev(run.id, "b", K.STARTED, 2, worker="w1@n"),
            ev(run.id, "c", K.RAN, 3, worker="w1@n", ended=at(4)),
        ]
    )
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    stopped = db.physical_workers.mark_stopped("w1@n")
    assert (stopped.status, stopped.pid) == (WorkerStatus.STOPPED, None)
    lost = db.tasks.get_all({"state": "lost"})
    assert [t.id for t in lost] == ["a", "b"]
    assert {t.error for t in lost} == {"worker w1@n shut down with the task unfinished"}
    assert {t.worker for t in lost} == {"w1@n"}
    after = db.runs.get(run.id)
    assert (after.tasks_lost, after.tasks_succeeded, after.status) == (2, 1, RunStatus.STALLED)
    assert after.is_active and after.finished_at is None


def test_a_stale_worker_is_found_at_the_next_read_and_revives_with_its_heartbeat(
    db: TrackingDatabase,
) -> None:
    worker(db, "w1@n", ["q"], stale_after=0.3)
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(
        [ev(run.id, "t", K.PUBLISHED, queue="q"), ev(run.id, "t", K.STARTED, 1, worker="w1@n")]
    )
    beat = db.physical_workers.get("w1@n").heartbeat_timestamp
    assert beat is not None
    time.sleep(
        max(0.0, (beat + timedelta(seconds=0.35) - datetime.now(timezone.utc)).total_seconds())
    )
    # No worker is alive to notice: the read does.
    stalled = db.runs.get(run.id)
    assert (stalled.status, stalled.tasks_lost) == (RunStatus.STALLED, 1)
    (task,) = db.tasks.get_all({"run_id": run.id})
    assert task.state is TaskState.LOST
    assert task.error == (
        f"worker w1@n stopped heartbeating at {beat.isoformat(timespec='seconds')}"
    )
    assert db.physical_workers.get("w1@n").status is WorkerStatus.STALLED
    assert db.physical_workers.get_all({"status": "stalled"})[0].name == "w1@n"
    # The worker was only slow: it beats again, and its task goes on.
    assert db.physical_workers.heartbeat(db.physical_workers.get("w1@n").id)
    assert db.physical_workers.get("w1@n").status is WorkerStatus.RUNNING
    db.runs.record_events([ev(run.id, "t", K.SUCCEEDED, 9, worker="w1@n")])
    done = db.runs.get(run.id)
    assert (done.status, done.tasks_lost, done.tasks_succeeded) == (RunStatus.COMPLETED, 0, 1)


def test_a_lost_task_redelivered_elsewhere_counts_once(db: TrackingDatabase) -> None:
    worker(db, "w1@n", ["q"])
    worker(db, "w2@n", ["q"])
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(
        [
            ev(run.id, "t", K.PUBLISHED, queue="q"),
            ev(run.id, "t", K.RECEIVED, 1, queue="q", worker="w1@n"),
            ev(run.id, "t", K.STARTED, 2, worker="w1@n"),
        ]
    )
    db.physical_workers.mark_stopped("w1@n")
    assert db.tasks.get("t").state is TaskState.LOST
    # Nothing in flight, nothing waiting: stalled until the task comes back (redelivery).
    assert db.runs.get(run.id).status is RunStatus.STALLED
    db.runs.record_events([ev(run.id, "t", K.RECEIVED, 50, queue="q", worker="w2@n")])
    again = db.tasks.get("t")
    assert (again.state, again.worker, again.attempts) == (TaskState.RECEIVED, "w2@n", 1)
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    db.runs.record_events(
        [
            ev(run.id, "t", K.STARTED, 60, worker="w2@n"),
            ev(run.id, "t", K.SUCCEEDED, 70, worker="w2@n"),
        ]
    )
    final = db.tasks.get("t")
    assert (final.state, final.attempts, final.worker) == (TaskState.SUCCEEDED, 2, "w2@n")
    done = db.runs.get(run.id)
    assert done.counters == {
        "queued": 1,
        "started": 1,
        "succeeded": 1,
        "failed": 0,
        "retried": 0,
        "revoked": 0,
        "lost": 0,
    }
    assert done.status is RunStatus.COMPLETED


def test_queued_work_with_no_live_consumer_stalls_until_a_worker_comes(
    db: TrackingDatabase,
) -> None:
    run = db.runs.create("s", "/ws", ["sim"])
    db.runs.record_events([ev(run.id, f"t{i}", K.PUBLISHED, queue="sim") for i in range(3)])
    assert db.runs.get(run.id).status is RunStatus.STALLED
    assert db.runs.get_all({"status": "stalled"})[0].id == run.id
    worker(db, "w1@n", ["post"])  # another queue: still nobody for sim
    assert db.runs.get(run.id).status is RunStatus.STALLED
    worker(db, "sim@n", ["sim"])
    assert db.runs.get(run.id).status is RunStatus.QUEUED
    db.runs.record_events([ev(run.id, "t0", K.STARTED, 1, worker="sim@n")])
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    db.physical_workers.mark_stopped("sim@n")  # t0 is lost, t1 and t2 wait with nobody
    stalled = db.runs.get(run.id)
    assert (stalled.status, stalled.tasks_lost) == (RunStatus.STALLED, 1)


def test_the_main_process_receipt_after_the_childs_events_changes_nothing(
    db: TrackingDatabase,
) -> None:
    worker(db, "w1@n", ["q"])
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(
        [ev(run.id, "t", K.PUBLISHED, queue="q"), ev(run.id, "t", K.STARTED, 5, worker="w1@n")]
    )
    db.runs.record_events([ev(run.id, "t", K.RECEIVED, 4, queue="q", worker="w1@n")])
    assert db.tasks.get("t").state is TaskState.STARTED  # the late receipt of the same delivery
    db.runs.record_events([ev(run.id, "t", K.SUCCEEDED, 6, worker="w1@n")])
    db.runs.record_events([ev(run.id, "t", K.RECEIVED, 4, queue="q", worker="w1@n")])
    done = db.runs.get(run.id)
    assert (done.status, done.tasks_started, done.tasks_succeeded) == (RunStatus.COMPLETED, 1, 1)


def test_a_revoke_applied_before_the_start_still_counts_the_start(db: TrackingDatabase) -> None:
    worker(db, "w1@n", ["q"])
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(
        [ev(run.id, "t", K.PUBLISHED, queue="q"), ev(run.id, "t", K.REVOKED, 3, worker="w1@n")]
    )
    db.runs.record_events([ev(run.id, "t", K.STARTED, 2, worker="w1@n")])
    after = db.runs.get(run.id)
    assert (after.tasks_started, after.tasks_revoked, after.status) == (1, 1, RunStatus.COMPLETED)
    assert db.tasks.get("t").state is TaskState.REVOKED


def test_settling_moves_neither_the_start_nor_the_end(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", [])
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    flags = COUNTED_AT_WORKER
    db.runs.record_events(
        [
            TaskEvent(run.id, "t", K.RECEIVED, "q", worker="w@n", at=now * 1000, flags=flags),
            TaskEvent(
                run.id, "t", K.RAN, worker="w@n", at=(now + 1) * 1000, ended=(now + 101) * 1000
            ),
        ],
        settle=0.4,
    )
    waiting = db.runs.get(run.id)
    assert waiting.status is RunStatus.RUNNING and waiting.settle_until is not None
    time.sleep(max(0.0, (waiting.settle_until - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    done = db.runs.get(run.id)
    assert done.status is RunStatus.COMPLETED and done.settle_until is None
    assert done.started_at is not None and done.finished_at is not None
    assert (done.finished_at - done.started_at).total_seconds() == pytest.approx(0.1, abs=0.002)


def test_the_run_ending_task_completes_without_the_settle_wait(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", [])
    flags = COUNTED_AT_WORKER
    db.runs.record_events(
        [
            ev(run.id, "step", K.RECEIVED, 0, queue="q", worker="w@n", flags=flags),
            ev(run.id, "step", K.RAN, 1, worker="w@n", ended=at(2), flags=flags),
            ev(run.id, "end", K.RECEIVED, 3, queue="q", worker="w@n", flags=flags),
        ],
        settle=3600,
    )
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    db.runs.record_events(
        [ev(run.id, "end", K.RAN, 4, worker="w@n", ended=at(5), flags=flags + ENDS_RUN)],
        settle=3600,
    )
    done = db.runs.get(run.id)
    assert (done.status, done.settle_until) == (RunStatus.COMPLETED, None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations(list(range(12))))
def test_no_order_of_main_and_child_reports_completes_before_the_settle_time(
    db: TrackingDatabase, order: list[int]
) -> None:
    """Four tasks counted at a worker: the main process reports each receipt, the pool child
    its start and success. Whatever order the stores see them in (each process's own order
    kept), the run never completes before it settles and started never falls below the
    finished tasks."""
    run = db.runs.create("s", f"/ws/{'-'.join(map(str, order))}", [])
    main = [
        ev(run.id, f"t{i}", K.RECEIVED, i, queue="q", worker="w@n", flags="w") for i in range(4)
    ]
    child = [
        e
        for i in range(4)
        for e in (
            ev(run.id, f"t{i}", K.STARTED, 10 + i, worker="w@n", flags="w"),
            ev(run.id, f"t{i}", K.SUCCEEDED, 20 + i, worker="w@n", flags="w"),
        )
    ]
    pending = {"main": main, "child": child}
    streams = ["main"] * len(main) + ["child"] * len(child)
    for index in order:
        event = pending[streams[index]].pop(0)
        db.runs.record_events([event], settle=3600)
        seen = db.runs.get(run.id)
        assert seen.status is not RunStatus.COMPLETED
        assert seen.tasks_started >= seen.tasks_succeeded + seen.tasks_failed
    final = db.runs.get(run.id)
    assert (final.tasks_queued, final.tasks_started, final.tasks_succeeded) == (4, 4, 4)
    assert final.status is RunStatus.RUNNING and final.settle_until is not None


def test_retention_zero_drops_task_records_at_completion_and_keeps_counters(
    db: TrackingDatabase,
) -> None:
    worker(db, "w1@n", ["q"])
    run = db.runs.create("s", "/ws", ["q"], task_retention=0)
    db.runs.record_events([ev(run.id, "t", K.PUBLISHED, queue="q")])
    assert len(db.tasks.get_all({"run_id": run.id})) == 1
    db.runs.record_events([ev(run.id, "t", K.RAN, 1, worker="w1@n", ended=at(2))])
    done = db.runs.get(run.id)
    assert done.status is RunStatus.COMPLETED and done.tasks_succeeded == 1
    assert db.tasks.get_all({"run_id": run.id}) == []
    with pytest.raises(TaskNotFoundError):
        db.tasks.get("t")


def test_retention_expires_task_records_of_completed_runs(db: TrackingDatabase) -> None:
    worker(db, "w1@n", ["q"])
    run = db.runs.create("s", "/ws", ["q"], task_retention=0.3)
    db.runs.record_events(
        [ev(run.id, "t", K.PUBLISHED, queue="q"), ev(run.id, "t", K.RAN, 1, ended=at(2))]
    )
    assert db.runs.get(run.id).status is RunStatus.COMPLETED
    assert len(db.tasks.get_all({"run_id": run.id})) == 1
    time.sleep(0.5)
    assert db.tasks.get_all({"run_id": run.id}) == []
    assert db.runs.get(run.id).tasks_succeeded == 1


def test_failed_runs_keep_their_task_records(db: TrackingDatabase) -> None:
    worker(db, "w1@n", ["q"])
    run = db.runs.create("s", "/ws", ["q"], task_retention=0)
    db.runs.record_events(
        [ev(run.id, "t", K.PUBLISHED, queue="q"), ev(run.id, "t", K.FAILED, 1, error="E: x")]
    )
    assert db.runs.get(run.id).status is RunStatus.FAILED
    assert db.tasks.get("t").error == "E: x"


def test_task_reads_filters_and_deletion(db: TrackingDatabase) -> None:
    worker(db, "w1@n", ["q", "p"])
    first = db.runs.create("s", "/ws/1", ["q"])
    second = db.runs.create("s", "/ws/2", ["p"])
    db.runs.record_events(
        [
            ev(first.id, "a", K.PUBLISHED, queue="q", name="app.a"),
            ev(first.id, "b", K.PUBLISHED, queue="q", name="app.b"),
            ev(first.id, "b", K.STARTED, 1, worker="w1@n"),
            ev(second.id, "c", K.PUBLISHED, queue="p", name="app.a"),
        ]
    )
    assert [t.id for t in db.tasks.get_all()] == ["a", "b", "c"]
    assert [t.id for t in db.tasks.get_all({"name": "app.a"})] == ["a", "c"]
    assert [t.id for t in db.tasks.get_all({"queue": "p"})] == ["c"]
    assert [t.id for t in db.tasks.get_all({"worker": "w1@n", "state": "STARTED"})] == ["b"]
    assert [t.id for t in db.tasks.get_all({"state": ["queued", "started"]}, limit=2)] == ["a", "b"]
    assert db.tasks.get_all({"state": []}) == []
    with pytest.raises(InvalidFilterError, match="valid filters"):
        db.tasks.get_all({"colour": "red"})
    with pytest.raises(InvalidFilterError, match="LOST"):
        db.tasks.get_all({"state": "sleeping"})
    with pytest.raises(TaskNotFoundError):
        db.tasks.get("nope")
    db.tasks.delete("a")
    assert [t.id for t in db.tasks.get_all({"run_id": first.id})] == ["b"]
    assert db.runs.get(first.id).tasks_queued == 2  # counters stay
    db.runs.delete(first.id)  # its task records go with it
    assert [t.id for t in db.tasks.get_all()] == ["c"]
