"""Logical and physical worker managers against a real Redis."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from merlin_tracking import (
    InvalidRecordError,
    TrackingDatabase,
    WorkerNotFoundError,
    WorkerStatus,
)
from merlin_tracking.ids import logical_worker_id


def test_logical_worker_id_is_deterministic_across_processes() -> None:
    here = logical_worker_id("sim", ["b", "a"])
    code = "from merlin_tracking.ids import logical_worker_id;print(logical_worker_id('sim',['a','b']))"
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert here == there
    assert logical_worker_id("sim", ["a"]) != here
    assert logical_worker_id("other", ["a", "b"]) != here


def test_logical_create_is_idempotent(db: TrackingDatabase) -> None:
    first = db.logical_workers.create("sim", ["b", "a"])
    second = db.logical_workers.create("sim", ["a", "b", "a"])
    assert first == second
    assert first.queues == ("a", "b")
    assert db.logical_workers.count() == 1


def test_logical_get_by_id_or_name_and_queues(db: TrackingDatabase) -> None:
    worker = db.logical_workers.create("sim", ["a", "b"])
    assert db.logical_workers.get(worker.id) == worker
    assert db.logical_workers.get(worker_name="sim", queues=["b", "a"]) == worker
    with pytest.raises(WorkerNotFoundError):
        db.logical_workers.get(worker_name="sim", queues=["a"])
    with pytest.raises(InvalidRecordError):
        db.logical_workers.get(worker_name="sim")


def test_logical_worker_needs_queues(db: TrackingDatabase) -> None:
    with pytest.raises(InvalidRecordError, match="at least one queue"):
        db.logical_workers.create("sim", [])


def test_logical_delete_detaches_runs_and_physical(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("sim", ["q"])
    run = db.runs.create("sweep", "/ws/1", ["q"])
    pw = db.physical_workers.create("sim@node1", pid=10, host="node1", logical_worker_id=lw.id)
    assert db.logical_workers.get(lw.id).physical_workers == (pw.id,)
    db.logical_workers.delete(lw.id)
    assert db.runs.get(run.id).workers == ()
    assert db.physical_workers.get(pw.id).logical_worker_id is None
    assert db.logical_workers.get_all({"queues": "q"}) == []
    # A later run on the queue attaches nothing.
    assert db.runs.create("sweep", "/ws/2", ["q"]).workers == ()


def test_logical_filters(db: TrackingDatabase) -> None:
    a = db.logical_workers.create("sim", ["q1"])
    b = db.logical_workers.create("sim", ["q2"])
    c = db.logical_workers.create("post", ["q2", "q3"])
    assert db.logical_workers.get_all({"name": "sim"}) == [a, b]
    assert db.logical_workers.get_all({"queues": "q2"}) == [b, c]
    assert db.logical_workers.get_all({"name": "sim", "queues": ["q2", "q3"]}) == [b]


def test_physical_create_defaults(db: TrackingDatabase) -> None:
    before = datetime.now(timezone.utc)
    pw = db.physical_workers.create("w1@node1", host="node1", pid=4321, launch_cmd="celery worker")
    assert pw.status is WorkerStatus.RUNNING
    assert pw.pid == 4321 and isinstance(pw.pid, int)
    assert pw.heartbeat_timestamp is not None and pw.heartbeat_timestamp >= before
    assert pw.latest_start_time == pw.heartbeat_timestamp
    assert pw.restart_count == 0
    assert db.physical_workers.get("w1@node1") == pw
    assert db.physical_workers.get(pw.id) == pw


def test_physical_upsert_same_pid_updates_without_restart(db: TrackingDatabase) -> None:
    pw = db.physical_workers.create("w1@node1", host="node1", pid=1)
    again = db.physical_workers.create("w1@node1", pid=1, args={"concurrency": 4})
    assert again.id == pw.id
    assert again.restart_count == 0
    assert again.args == {"concurrency": 4}
    assert again.latest_start_time == pw.latest_start_time
    assert again.heartbeat_timestamp is not None and pw.heartbeat_timestamp is not None
    assert again.heartbeat_timestamp >= pw.heartbeat_timestamp


def test_physical_restart_after_stop_is_running_again(db: TrackingDatabase) -> None:
    pw = db.physical_workers.create("w1@node1", host="node1", pid=1)
    db.physical_workers.update(pw.id, status=WorkerStatus.STOPPED, pid=None)
    stopped = db.physical_workers.get(pw.id)
    assert stopped.status is WorkerStatus.STOPPED and stopped.pid is None
    restarted = db.physical_workers.create("w1@node1", host="node2", pid=2)
    assert restarted.id == pw.id
    assert restarted.restart_count == 1
    assert restarted.status is WorkerStatus.RUNNING
    assert restarted.pid == 2 and restarted.host == "node2"
    assert restarted.latest_start_time is not None and pw.latest_start_time is not None
    assert restarted.latest_start_time > pw.latest_start_time
    assert db.physical_workers.get_all({"status": "stopped"}) == []
    assert db.physical_workers.get_all({"status": "running", "host": "node2"}) == [restarted]
    assert db.physical_workers.get_all({"host": "node1"}) == []
    assert db.physical_workers.count() == 1


def test_physical_link_to_logical(db: TrackingDatabase) -> None:
    lw1 = db.logical_workers.create("w", ["a"])
    lw2 = db.logical_workers.create("w", ["b"])
    pw = db.physical_workers.create("w@n", pid=1, logical_worker_id=lw1.id)
    assert db.logical_workers.get(lw1.id).physical_workers == (pw.id,)
    moved = db.physical_workers.create("w@n", pid=1, logical_worker_id=lw2.id)
    assert moved.logical_worker_id == lw2.id
    assert db.logical_workers.get(lw1.id).physical_workers == ()
    assert db.logical_workers.get(lw2.id).physical_workers == (pw.id,)
    assert db.physical_workers.get_all({"logical_worker_id": lw2.id}) == [moved]


def test_physical_link_to_missing_logical_fails_cleanly(db: TrackingDatabase) -> None:
    with pytest.raises(WorkerNotFoundError):
        db.physical_workers.create("w@n", pid=1, logical_worker_id="000000000000")
    assert db.physical_workers.count() == 0
    with pytest.raises(WorkerNotFoundError):
        db.physical_workers.get("w@n")


def test_physical_unknown_field_refused(db: TrackingDatabase) -> None:
    with pytest.raises(InvalidRecordError, match="valid:"):
        db.physical_workers.create("w@n", colour="red")
    with pytest.raises(InvalidRecordError, match="integer"):
        db.physical_workers.create("w@n", pid="12")
    assert db.physical_workers.count() == 0


def test_physical_delete_unlinks(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("w", ["a"])
    pw = db.physical_workers.create("w@n", pid=1, host="n", logical_worker_id=lw.id)
    db.physical_workers.delete("w@n")
    assert db.logical_workers.get(lw.id).physical_workers == ()
    assert db.physical_workers.get_all({"host": "n"}) == []
    with pytest.raises(WorkerNotFoundError):
        db.physical_workers.get(pw.id)
    with pytest.raises(WorkerNotFoundError):
        db.physical_workers.delete("w@n")


def test_delete_all_workers(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("w", ["a"])
    db.runs.create("s", "/ws", ["a"])
    for index in range(5):
        db.physical_workers.create(f"w@n{index}", pid=index, logical_worker_id=lw.id)
    assert db.physical_workers.delete_all() == 5
    assert db.logical_workers.get(lw.id).physical_workers == ()
    assert db.logical_workers.delete_all() == 1
    assert db.runs.get("/ws").workers == ()
