"""Batch jobs on physical worker records, in both stores: the job fields, the ``job_id`` filter
and its index, and why the tasks of a worker whose allocation ended are lost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from merlin_tracking import TaskState, TrackingDatabase, WorkerStatus
from merlin_tracking.records import PhysicalWorker
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.records.events import TaskEventKind as K
from tests.support.processes import wait_until

JOB = {
    "scheduler": "slurm",
    "job_id": "4242",
    "job_name": "sweep",
    "job_nodes": "node[01-04]",
}


def _worker(db: TrackingDatabase, name: str, **fields: object) -> PhysicalWorker:
    logical = db.logical_workers.create(name.split("@")[0], ["q"])
    return db.physical_workers.create(
        name, pid=1234, logical_worker_id=logical.id, status=WorkerStatus.RUNNING, **fields
    )


def test_job_fields_are_stored_and_filtered_by_job_id(db: TrackingDatabase) -> None:
    ends = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)
    a = _worker(db, "a@node01", **JOB, job_ends_at=ends)
    _worker(db, "b@node02", **{**JOB, "job_id": "4243"})
    _worker(db, "c@laptop")
    stored = db.physical_workers.get(a.id)
    assert (stored.scheduler, stored.job_id, stored.job_name, stored.job_nodes) == (
        "slurm",
        "4242",
        "sweep",
        "node[01-04]",
    )
    assert stored.job_ends_at == ends
    assert db.physical_workers.get("c@laptop").job_id is None
    assert [w.name for w in db.physical_workers.get_all({"job_id": "4242"})] == ["a@node01"]
    both = db.physical_workers.get_all({"job_id": ["4242", "4243"], "status": "running"})
    assert sorted(w.name for w in both) == ["a@node01", "b@node02"]
    assert db.physical_workers.get_all({"job_id": "nope"}) == []


def test_the_job_index_follows_updates_restarts_and_deletes(db: TrackingDatabase) -> None:
    _worker(db, "a@n", **JOB)
    db.physical_workers.update("a@n", job_id="5000")
    assert db.physical_workers.get_all({"job_id": "4242"}) == []
    assert [w.name for w in db.physical_workers.get_all({"job_id": "5000"})] == ["a@n"]
    # A restart in no allocation (its fields given as None) leaves no job behind.
    logical = db.logical_workers.create("a", ["q"])
    restarted = db.physical_workers.create(
        "a@n", pid=99, logical_worker_id=logical.id, **dict.fromkeys(JOB)
    )
    assert (restarted.job_id, restarted.scheduler, restarted.restart_count) == (None, None, 1)
    assert db.physical_workers.get_all({"job_id": "5000"}) == []
    db.physical_workers.update("a@n", job_id="6000")
    db.physical_workers.delete("a@n")
    assert db.physical_workers.get_all({"job_id": "6000"}) == []


def _lose_one_task(db: TrackingDatabase, name: str, **fields: object) -> str:
    """A worker with one started task, gone quiet: the task's LOST reason, read after the
    worker went stale (the read catches up)."""
    _worker(db, name, stale_after=0.3, **fields)
    run = db.runs.create("s", f"/ws/{name}", ["q"])
    db.runs.record_events(
        [
            TaskEvent(run.id, "t", K.PUBLISHED, queue="q"),
            TaskEvent(run.id, "t", K.STARTED, worker=name),
        ]
    )

    def lost() -> str | None:
        (task,) = db.tasks.get_all({"run_id": run.id})
        return task.error if task.state is TaskState.LOST else None

    return wait_until(lost, 10, "the task to be lost", interval=0.1)


def test_a_worker_stale_after_its_allocation_ended_loses_its_tasks_to_the_allocation(
    db: TrackingDatabase,
) -> None:
    ended = datetime.now(timezone.utc)
    error = _lose_one_task(db, "w1@node7", **JOB, job_ends_at=ended)
    beat = db.physical_workers.get("w1@node7").heartbeat_timestamp
    assert beat is not None
    assert error == (
        f"allocation 4242 (slurm) ended at {ended.isoformat(timespec='seconds')}; worker w1@node7 stopped "
        f"heartbeating at {beat.isoformat(timespec='seconds')}"
    )


@pytest.mark.parametrize("offset", [timedelta(hours=1), timedelta(hours=-1)])
def test_an_allocation_not_ended_or_ended_long_before_is_not_the_reason(
    db: TrackingDatabase, offset: timedelta
) -> None:
    """Ends in the future: the worker crashed. Ended an hour before its last heartbeat (it
    went on beating, so the end it was told was not the end): not why it went quiet now."""
    error = _lose_one_task(db, "w2@node7", **JOB, job_ends_at=datetime.now(timezone.utc) + offset)
    assert error.startswith("worker w2@node7 stopped heartbeating at ")


def test_the_reason_waits_for_the_end_time_to_pass(db: TrackingDatabase) -> None:
    """An end a moment away when the worker stopped, passed by the time it is found stale."""
    soon = datetime.now(timezone.utc) + timedelta(seconds=0.2)
    error = _lose_one_task(db, "w3@node7", **JOB, job_ends_at=soon)
    assert error.startswith("allocation 4242 (slurm) ended at ")
