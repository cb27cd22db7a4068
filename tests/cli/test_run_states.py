"""Settling and STALLED runs in ``runs list``, ``watch`` and ``info``, and run durations from
their tasks' times, on both stores."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from merlin_tracking import RunStatus, TrackingDatabase
from merlin_tracking.cli.documents import elapsed_seconds
from merlin_tracking.records.events import COUNTED_AT_WORKER, TaskEvent, TaskEventKind
from tests.support.cli import Cli, make_run, ok, store_cli, widest_line

K = TaskEventKind
SETTLE = 1.5


@pytest.fixture
def cli(
    request: pytest.FixtureRequest, store_backend: str, prefix: str, db: TrackingDatabase
) -> Cli:
    return store_cli(request, store_backend, prefix)


def now_us() -> int:
    return int(time.time() * 1_000_000)


def settling_run(db: TrackingDatabase, workspace: str) -> str:
    """A run whose one task, counted at a worker, ran for 0.1 s: it settles for ``SETTLE`` s."""
    run = db.runs.create("sweep", workspace, [])
    t0 = now_us()
    received = TaskEvent(
        run.id, "t", K.RECEIVED, "sim", worker="sim@n1", at=t0, flags=COUNTED_AT_WORKER
    )
    db.runs.record_events([received], settle=SETTLE)
    db.runs.record_events(
        [
            TaskEvent(run.id, "t", K.STARTED, worker="sim@n1", at=t0 + 1000),
            TaskEvent(run.id, "t", K.SUCCEEDED, worker="sim@n1", at=t0 + 101_000),
        ]
    )
    return run.id


def stalled_run(db: TrackingDatabase, workspace: str, node: str = "lost@n9") -> str:
    """A run with two tasks lost with the stopped worker ``node``, and one waiting on ``sim``
    (consumed by nobody once ``node`` is gone)."""
    lw = db.logical_workers.create("lost", ["sim"])
    db.physical_workers.create(node, pid=9, logical_worker_id=lw.id, stale_after=60)
    run = db.runs.create("sweep", workspace, ["sim"])
    events = [TaskEvent(run.id, f"t{i}", K.PUBLISHED, "sim") for i in range(3)]
    events += [TaskEvent(run.id, f"t{i}", K.STARTED, worker=node) for i in range(2)]
    db.runs.record_events(events)
    db.physical_workers.mark_stopped(node)
    assert db.runs.get(run.id).status is RunStatus.STALLED
    return run.id


def test_a_settling_run_is_marked_and_its_duration_is_its_work(
    cli: Cli, db: TrackingDatabase
) -> None:
    run_id = settling_run(db, "/ws/settling")
    listed = ok(cli("runs", "list"))
    lines = listed.splitlines()
    assert lines[1].split()[:2] == [run_id, "RUNNING*"]
    assert lines[2] == "* settling: tasks were counted at workers, so more may still arrive"
    assert lines[-1] == "1 run"
    assert widest_line(listed) <= 80

    document = cli.json("runs", "list")["runs"][0]
    assert document["status"] == "RUNNING"  # the stored status; the flag says it settles
    assert document["settling"] is True and document["active"] is True
    assert document["finished_at"] is None and document["started_at"] is not None

    frame = ok(cli("watch", "--once"))
    assert "Active runs (1, 1 settling)" in frame
    assert f"{run_id}  RUNNING*" in frame and "* settling:" in frame
    assert "Settling   more tasks may still arrive until" in ok(cli("runs", "show", run_id))

    settle_until = db.runs.get(run_id).settle_until
    assert settle_until is not None
    time.sleep(max(0.0, (settle_until - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    shown = cli.json("runs", "show", run_id)["run"]
    assert shown["status"] == "COMPLETED" and shown["settling"] is False
    assert shown["finished_at"] is not None
    # 0.1 s of work, although the run completed more than SETTLE seconds after it was created
    assert shown["elapsed_seconds"] == pytest.approx(0.1, abs=0.01)
    text = ok(cli("runs", "show", run_id))
    assert "Duration   0.10s" in text.splitlines()
    assert "*" not in ok(cli("runs", "list"))


def test_elapsed_falls_back_to_creation_and_last_update(db: TrackingDatabase) -> None:
    fresh = make_run(db, "s", "/ws/fresh")  # no task started: counts from its creation
    assert fresh.started_at is None and fresh.is_active
    assert elapsed_seconds(fresh, fresh.created_at + timedelta(seconds=5)) == 5.0
    cancelled = db.runs.cancel(fresh.id)  # no task started, ended when cancelled
    assert cancelled.finished_at is not None
    expected = (cancelled.finished_at - cancelled.created_at).total_seconds()
    assert elapsed_seconds(cancelled) == pytest.approx(expected)
    # a finished run recorded without finished_at (schema 1) ends at its last update
    older = cancelled.replace(
        finished_at=None, updated_at=cancelled.created_at + timedelta(seconds=7)
    )
    assert elapsed_seconds(older, older.created_at + timedelta(days=1)) == 7.0


def test_stalled_runs_stand_out(cli: Cli, db: TrackingDatabase) -> None:
    stalled = stalled_run(db, "/ws/stalled")
    lw = db.logical_workers.create("post", ["post"])
    db.physical_workers.create("post@n1", pid=1, logical_worker_id=lw.id, stale_after=60)
    running = make_run(db, "sweep", "/ws/running", ["post"], queued=2, started=1)
    assert db.runs.get(running.id).status is RunStatus.RUNNING

    listed = ok(cli("runs", "list"))
    rows = {line.split()[0]: line.split() for line in listed.splitlines()[1:3]}
    assert rows[stalled][1] == "STALLED" and rows[running.id][1] == "RUNNING"
    assert listed.splitlines()[-1] == "2 runs, 1 stalled"
    only = cli.json("runs", "list", "--status", "stalled")
    assert [run["id"] for run in only["runs"]] == [stalled]
    assert only["runs"][0]["active"] is True and only["runs"][0]["tasks_lost"] == 2
    assert ok(cli("runs", "list", "--status", "running")).splitlines()[-1] == "1 run"

    frame = ok(cli("watch", "--once"))
    assert "Active runs (2, 1 stalled)" in frame and "settling" not in frame
    assert f"{stalled}  STALLED" in frame
    assert widest_line(frame) <= 80
    assert [run["status"] for run in cli.json("watch", "--once")["runs"]] == [
        "RUNNING",
        "STALLED",
    ]

    help_text = ok(cli("runs", "list", "--help", store=False))
    assert "STALLED" in help_text


def test_info_counts_lost_tasks_of_active_runs(cli: Cli, db: TrackingDatabase) -> None:
    assert "Lost" not in ok(cli("info"))
    stalled_run(db, "/ws/one", "lost@n8")
    stalled_run(db, "/ws/two", "lost@n9")
    document = cli.json("info")
    assert document["lost_tasks"] == {"tasks": 4, "runs": 2}
    assert document["runs_by_status"]["STALLED"] == 2
    out = ok(cli("info"))
    assert "Lost     4 tasks with dead workers, in 2 active runs" in out.splitlines()
    assert "STALLED 2" in out
    assert widest_line(out) <= 80
