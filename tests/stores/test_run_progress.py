"""Task events, counters and the run state machine, applied by the real Redis store."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from merlin_tracking import (
    InvalidRecordError,
    InvalidTransitionError,
    PhysicalWorker,
    RunStatus,
    TrackingDatabase,
    WorkerStatus,
)
from merlin_tracking.records.events import COUNTED_AT_WORKER, TaskEvent, TaskEventKind
from tests.support.celery import wait_for

P, S, RT, OK, KO, RV = (
    TaskEventKind.PUBLISHED,
    TaskEventKind.STARTED,
    TaskEventKind.RETRIED,
    TaskEventKind.SUCCEEDED,
    TaskEventKind.FAILED,
    TaskEventKind.REVOKED,
)


@pytest.fixture(autouse=True)
def consumer(db: TrackingDatabase) -> None:
    """A live worker on queue "q": runs whose tasks wait there can progress (not STALLED)."""
    lw = db.logical_workers.create("consumer", ["q"])
    db.physical_workers.create("consumer@test", pid=1, logical_worker_id=lw.id)


def events(run_id: str, *steps: tuple[str, TaskEventKind]) -> list[TaskEvent]:
    return [TaskEvent(run_id, task, kind, "q" if kind is P else None) for task, kind in steps]


def test_happy_path_counts_and_statuses(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(events(run.id, ("t1", P), ("t2", P)))
    assert db.runs.get(run.id).status is RunStatus.QUEUED
    db.runs.record_events(events(run.id, ("t1", S)))
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    db.runs.record_events(events(run.id, ("t1", OK), ("t2", S)))
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    db.runs.record_events(events(run.id, ("t2", OK)))
    done = db.runs.get(run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.counters == {
        "queued": 2,
        "started": 2,
        "succeeded": 2,
        "failed": 0,
        "retried": 0,
        "revoked": 0,
        "lost": 0,
    }
    assert db.runs.get_all({"status": "completed"}) == [done]


def test_retry_keeps_one_task(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    steps = [("t", P), ("t", S), ("t", P), ("t", RT), ("t", S), ("t", OK)]
    db.runs.record_events(events(run.id, *steps))
    done = db.runs.get(run.id)
    assert (done.tasks_queued, done.tasks_started, done.tasks_retried) == (1, 1, 1)
    assert done.status is RunStatus.COMPLETED


def test_events_out_of_order_across_processes_still_count_once(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.change_publishing(run.id, +1)  # as launch_study does while it publishes
    # The worker's start and success arrive before the publisher's report of the same task.
    db.runs.record_events(events(run.id, ("t1", S), ("t1", OK)))
    db.runs.record_events(events(run.id, ("t1", P), ("t2", P)))
    mid = db.runs.get(run.id)
    assert (mid.tasks_queued, mid.tasks_started, mid.tasks_succeeded) == (2, 1, 1)
    assert mid.status is RunStatus.RUNNING


def test_failure_fails_the_run_for_good(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(events(run.id, ("t1", P), ("t2", P), ("t1", S), ("t1", KO)))
    assert db.runs.get(run.id).status is RunStatus.FAILED
    db.runs.record_events(events(run.id, ("t2", S), ("t2", OK)))
    final = db.runs.get(run.id)
    assert final.status is RunStatus.FAILED
    assert (final.tasks_failed, final.tasks_succeeded) == (1, 1)


def test_revoke_before_start_counts_as_finished_not_started(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(events(run.id, ("t1", P), ("t2", P), ("t2", RV)))
    db.runs.record_events(events(run.id, ("t1", S), ("t1", OK)))
    done = db.runs.get(run.id)
    assert (done.tasks_started, done.tasks_revoked, done.tasks_succeeded) == (1, 1, 1)
    assert done.status is RunStatus.COMPLETED


def test_first_final_state_wins(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(events(run.id, ("t", P), ("t", S), ("t", RV), ("t", KO)))
    final = db.runs.get(run.id)
    assert (final.tasks_revoked, final.tasks_failed) == (1, 0)


def test_no_completion_while_a_launch_is_publishing(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.change_publishing(run.id, +1)
    db.runs.record_events(events(run.id, ("t1", P), ("t1", S), ("t1", OK)))
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    db.runs.record_events(events(run.id, ("t2", P)))
    assert db.runs.change_publishing(run.id, -1) is RunStatus.RUNNING
    db.runs.record_events(events(run.id, ("t2", S), ("t2", OK)))
    assert db.runs.get(run.id).status is RunStatus.COMPLETED


def test_publishing_end_completes_a_finished_run(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.change_publishing(run.id, +1)
    db.runs.record_events(events(run.id, ("t1", P), ("t1", S), ("t1", OK)))
    assert db.runs.change_publishing(run.id, -1) is RunStatus.COMPLETED
    assert db.runs.get(run.id).publishing == 0


def test_cancel_is_never_overwritten(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(events(run.id, ("t1", P), ("t1", S)))
    assert db.runs.cancel(run.id).status is RunStatus.CANCELLED
    db.runs.record_events(events(run.id, ("t1", OK), ("t2", P), ("t2", KO)))
    final = db.runs.get(run.id)
    assert final.status is RunStatus.CANCELLED
    assert final.tasks_failed == 1
    assert db.runs.cancel(run.id).status is RunStatus.CANCELLED  # idempotent


def test_illegal_transitions_are_refused(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.update(run.id, status="completed")
    with pytest.raises(InvalidTransitionError, match="from COMPLETED it may go to: nothing"):
        db.runs.cancel(run.id)
    with pytest.raises(InvalidTransitionError):
        db.runs.update(run.id, status="running", child="/x")
    assert db.runs.get(run.id).child is None
    other = db.runs.create("s", "/ws2", ["q"])
    db.runs.update(other.id, status="running")
    with pytest.raises(InvalidTransitionError, match="RUNNING to QUEUED"):
        db.runs.update(other.id, status="queued")


def test_published_queue_joins_run_and_attaches_workers(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("post", ["post"])
    run = db.runs.create("s", "/ws", ["sim"])
    db.runs.record_events([TaskEvent(run.id, "t", P, "post")])
    updated = db.runs.get(run.id)
    assert updated.queues == ("post", "sim")
    assert updated.workers == (lw.id,)
    assert db.logical_workers.get(lw.id).runs == (run.id,)


def test_events_for_missing_runs_are_reported(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    missing = db.runs.record_events(
        [TaskEvent("000000000000", "t", P, "q"), TaskEvent(run.id, "t", P, "q")]
    )
    assert missing == ["000000000000"]
    assert db.runs.get(run.id).tasks_queued == 1


def test_deleting_a_run_removes_its_task_states(
    redis_db: TrackingDatabase, raw_redis, prefix: str
) -> None:  # type: ignore[no-untyped-def]
    run = redis_db.runs.create("s", "/ws", ["q"])
    redis_db.runs.record_events(events(run.id, ("t", P)))
    assert raw_redis.exists("{" + prefix + "}:run:" + run.id[1:] + ":tasks")
    redis_db.runs.delete(run.id)
    assert not raw_redis.exists("{" + prefix + "}:run:" + run.id[1:] + ":tasks")


def test_worker_joining_later_attaches_to_active_runs_only(db: TrackingDatabase) -> None:
    active = db.runs.create("s", "/ws/active", ["sim"])
    finished = db.runs.create("s", "/ws/done", ["sim"])
    db.runs.update(finished.id, status="completed")
    lw = db.logical_workers.create("sim", ["sim", "post"])
    assert db.logical_workers.attach_to_active_runs(lw.id) == [active.id]
    assert db.runs.get(active.id).workers == (lw.id,)
    assert db.runs.get(finished.id).workers == ()
    assert db.logical_workers.attach_to_active_runs(lw.id) == []


def test_stalled_when_liveness_expires(db: TrackingDatabase) -> None:
    pw = db.physical_workers.create("w@n", pid=1, stale_after=0.3)
    assert db.physical_workers.get(pw.id).status is WorkerStatus.RUNNING
    time.sleep(0.2)
    assert db.physical_workers.heartbeat(pw.id) is True
    time.sleep(0.2)
    assert db.physical_workers.get(pw.id).status is WorkerStatus.RUNNING
    time.sleep(0.4)
    assert db.physical_workers.get(pw.id).status is WorkerStatus.STALLED
    assert db.physical_workers.get_all({"status": "stalled"})[0].id == pw.id
    assert db.physical_workers.get_all({"status": "running", "name": "w@n"}) == []
    db.physical_workers.heartbeat(pw.id)
    assert db.physical_workers.get_all({"status": "running", "name": "w@n"})[0].id == pw.id


def test_worker_without_threshold_never_stalls(db: TrackingDatabase) -> None:
    pw = db.physical_workers.create("w@n", pid=1)
    time.sleep(0.1)
    assert db.physical_workers.get(pw.id).status is WorkerStatus.RUNNING


def test_mark_stopped_clears_pid_and_liveness(db: TrackingDatabase) -> None:
    pw = db.physical_workers.create("w@n", pid=7, stale_after=30)
    stopped = db.physical_workers.mark_stopped("w@n")
    assert stopped.status is WorkerStatus.STOPPED and stopped.pid is None
    assert db.physical_workers.get_all({"status": ["stopped"]}) == [stopped]
    assert db.physical_workers.heartbeat(pw.id) is True
    assert db.physical_workers.get(pw.id).status is WorkerStatus.STOPPED
    db.physical_workers.delete(pw.id)
    assert db.physical_workers.heartbeat(pw.id) is False


def test_coalesced_start_and_success_count_like_the_pair(db: TrackingDatabase) -> None:
    from merlin_tracking.records.events import coalesce

    run = db.runs.create("s", "/ws", ["q"])
    batch = events(run.id, ("t1", P), ("t1", S), ("t2", P), ("t1", OK), ("t2", S), ("t2", KO))
    merged = coalesce(batch)
    assert [e.kind for e in merged] == [P, TaskEventKind.RAN, P, S, KO]
    db.runs.record_events(merged)
    done = db.runs.get(run.id)
    assert done.counters == {
        "queued": 2,
        "started": 2,
        "succeeded": 1,
        "failed": 1,
        "retried": 0,
        "revoked": 0,
        "lost": 0,
    }
    assert done.status is RunStatus.FAILED


def test_completed_run_reopens_when_new_tasks_join(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.record_events(events(run.id, ("t1", P), ("t1", S), ("t1", OK)))
    assert db.runs.get(run.id).status is RunStatus.COMPLETED
    db.runs.record_events(events(run.id, ("t2", P)))  # a later wave of the same run
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    db.runs.record_events(events(run.id, ("t2", S), ("t2", OK)))
    assert db.runs.get(run.id).status is RunStatus.COMPLETED
    # Events about tasks already counted never reopen it.
    db.runs.record_events(events(run.id, ("t1", OK), ("t2", P)))
    assert db.runs.get(run.id).status is RunStatus.COMPLETED
    # An API transition out of COMPLETED is still refused.
    with pytest.raises(InvalidTransitionError):
        db.runs.update(run.id, status="running")


def test_failed_and_cancelled_runs_never_reopen(db: TrackingDatabase) -> None:
    failed = db.runs.create("s", "/ws/f", ["q"])
    db.runs.record_events(events(failed.id, ("t1", P), ("t1", S), ("t1", KO), ("t2", P)))
    assert db.runs.get(failed.id).status is RunStatus.FAILED
    cancelled = db.runs.create("s", "/ws/c", ["q"])
    db.runs.cancel(cancelled.id)
    db.runs.record_events(events(cancelled.id, ("t1", P), ("t1", S)))
    assert db.runs.get(cancelled.id).status is RunStatus.CANCELLED


# ------------------------------------------------------------------------------- settling
RCV = TaskEventKind.RECEIVED


def received(run_id: str, *tasks: str) -> list[TaskEvent]:
    """Tasks first counted at a worker (their publisher was not tracked)."""
    return [TaskEvent(run_id, task, RCV, "q", flags=COUNTED_AT_WORKER) for task in tasks]


def wait_past(moment: datetime | None) -> None:
    assert moment is not None
    time.sleep(max(0.0, (moment - datetime.now(timezone.utc)).total_seconds()) + 0.05)


def test_received_tasks_hold_completion_until_the_run_settles(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", [])
    before = datetime.now(timezone.utc)
    db.runs.record_events(received(run.id, "t1"), settle=0.8)
    db.runs.record_events(events(run.id, ("t1", S), ("t1", OK)), settle=0.8)
    waiting = db.runs.get(run.id)
    # Every counted task is done, but more may still be on their way through the broker.
    assert waiting.status is RunStatus.RUNNING
    assert waiting.settle_until is not None
    assert waiting.settle_until >= before + timedelta(seconds=0.7)
    assert list(waiting.queues) == ["q"]
    assert db.runs.settle() == []
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    wait_past(waiting.settle_until)
    assert db.runs.settle() == [run.id]
    done = db.runs.get(run.id)
    assert done.status is RunStatus.COMPLETED
    assert (done.tasks_queued, done.tasks_succeeded) == (1, 1)
    assert db.runs.settle() == []  # applied once


def test_each_receipt_pushes_the_settle_time_back(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", [])
    db.runs.record_events(received(run.id, "t1"), settle=0.8)
    db.runs.record_events(events(run.id, ("t1", S), ("t1", OK)))
    first = db.runs.get(run.id).settle_until
    time.sleep(0.4)
    db.runs.record_events(received(run.id, "t2"), settle=0.8)  # the next wave arrives
    second = db.runs.get(run.id).settle_until
    assert first is not None and second is not None and second > first
    wait_past(first)
    assert db.runs.settle() == []
    db.runs.record_events(events(run.id, ("t2", S), ("t2", OK)))
    assert db.runs.get(run.id).status is RunStatus.RUNNING
    wait_past(second)
    assert db.runs.settle() == [run.id]
    done = db.runs.get(run.id)
    assert done.status is RunStatus.COMPLETED
    assert (done.tasks_queued, done.tasks_succeeded) == (2, 2)


def test_events_after_the_settle_time_complete_at_once(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", [])
    db.runs.record_events(received(run.id, "t1"), settle=0.3)
    db.runs.record_events(events(run.id, ("t1", S)))
    wait_past(db.runs.get(run.id).settle_until)
    db.runs.record_events(events(run.id, ("t1", OK)))
    assert db.runs.get(run.id).status is RunStatus.COMPLETED


def test_settling_never_delays_failure_or_runs_counted_at_publish(db: TrackingDatabase) -> None:
    published = db.runs.create("s", "/ws/p", [])
    db.runs.record_events(events(published.id, ("t", P), ("t", S), ("t", OK)), settle=30)
    done = db.runs.get(published.id)
    assert done.status is RunStatus.COMPLETED and done.settle_until is None
    failing = db.runs.create("s", "/ws/f", [])
    db.runs.record_events(received(failing.id, "t"), settle=30)
    db.runs.record_events(events(failing.id, ("t", S), ("t", KO)), settle=30)
    assert db.runs.get(failing.id).status is RunStatus.FAILED


def test_zero_settle_completes_at_once(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", [])
    db.runs.record_events(received(run.id, "t1"), settle=0)
    db.runs.record_events(events(run.id, ("t1", S), ("t1", OK)))
    done = db.runs.get(run.id)
    assert done.status is RunStatus.COMPLETED and done.settle_until is None


def test_settling_run_deleted_or_cancelled_is_left_alone(db: TrackingDatabase) -> None:
    gone = db.runs.create("s", "/ws/gone", [])
    kept = db.runs.create("s", "/ws/cancelled", [])
    for run in (gone, kept):
        db.runs.record_events(received(run.id, "t"), settle=0.3)
        db.runs.record_events(events(run.id, ("t", S), ("t", OK)))
    until = db.runs.get(kept.id).settle_until
    db.runs.delete(gone.id)
    assert db.runs.cancel(kept.id).settle_until is None  # a cancelled run waits for nothing
    wait_past(until)
    assert db.runs.settle() == []
    assert db.runs.get(kept.id).status is RunStatus.CANCELLED


@pytest.mark.parametrize("settle", [-1, float("nan"), float("inf")])
def test_bad_settle_is_refused_and_changes_nothing(db: TrackingDatabase, settle: float) -> None:
    run = db.runs.create("s", "/ws", [])
    with pytest.raises(InvalidRecordError, match="settle"):
        db.runs.record_events(received(run.id, "t1"), settle=settle)
    assert db.runs.get(run.id).tasks_queued == 0


def test_a_large_batch_counts_every_task_once(db: TrackingDatabase) -> None:
    """One batch with thousands of tasks (task states are written back in slices)."""
    run = db.runs.create("s", "/ws", [])
    tasks = [f"t{i}" for i in range(2500)]
    batch = [TaskEvent(run.id, t, RCV, "q") for t in tasks]
    batch += [TaskEvent(run.id, t, TaskEventKind.RAN) for t in tasks[:2000]]
    batch += [TaskEvent(run.id, t, S) for t in tasks[2000:]]
    batch += [TaskEvent(run.id, tasks[0], OK)]  # a duplicate final event counts nothing
    db.runs.record_events(batch)
    db.runs.record_events(events(run.id, *((t, OK) for t in tasks[2000:])))
    done = db.runs.get(run.id)
    assert done.counters == {
        "queued": 2500,
        "started": 2500,
        "succeeded": 2500,
        "failed": 0,
        "retried": 0,
        "revoked": 0,
        "lost": 0,
    }
    assert done.status is RunStatus.COMPLETED


def _stored_stalled(db: TrackingDatabase) -> list[str]:
    """Workers stored STALLED (found stale by a catch-up), read without a catch-up."""
    return sorted(db.store.find_ids(PhysicalWorker, {"status": ["STALLED"]}))


def _expired(db: TrackingDatabase, worker_id: str) -> None:
    """Wait, without a catch-up, until the worker's liveness has lapsed."""
    wait_for(
        lambda: (
            getattr(db.store.fetch(PhysicalWorker, worker_id), "status", None)
            is WorkerStatus.STALLED
        )
    )


def test_a_beacons_beat_applies_what_time_made_due(db: TrackingDatabase) -> None:
    alive = db.physical_workers.create("alive@n", pid=1, stale_after=30)
    gone = db.physical_workers.create("gone@n", pid=2, stale_after=0.2)
    _expired(db, gone.id)
    assert _stored_stalled(db) == []
    assert db.store.beat(alive.id, datetime.now(timezone.utc)) is True
    assert _stored_stalled(db) == [gone.id]
    db.physical_workers.delete(alive.id)
    assert db.store.beat(alive.id, datetime.now(timezone.utc)) is False


def test_beats_of_many_workers_catch_up_once_per_interval(redis_db: TrackingDatabase) -> None:
    db = redis_db
    alive = db.physical_workers.create("alive@n", pid=1, stale_after=30)
    first = db.physical_workers.create("first@n", pid=2, stale_after=0.2)
    _expired(db, first.id)
    assert db.store.beat(alive.id, datetime.now(timezone.utc), every=60) is True
    assert _stored_stalled(db) == [first.id]
    second = db.physical_workers.create("second@n", pid=3, stale_after=0.2)
    _expired(db, second.id)
    # Within the interval another beat does not catch up again; readers still do.
    assert db.store.beat(alive.id, datetime.now(timezone.utc), every=60) is True
    assert _stored_stalled(db) == [first.id]
    db.store.catch_up()
    assert _stored_stalled(db) == sorted([first.id, second.id])
