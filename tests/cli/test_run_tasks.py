"""``runs tasks``, and what ``runs show`` tells of a run's tasks (failed, lost, why STALLED),
on both stores, from real task events."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from merlin_tracking import RunStatus, TrackingDatabase
from merlin_tracking.records.events import TaskEvent, TaskEventKind
from tests.support.cli import Cli, fails, ok, store_cli, widest_line

K = TaskEventKind
TASK_KEYS = [
    "id",
    "created_at",
    "run_id",
    "state",
    "name",
    "queue",
    "worker",
    "attempts",
    "queued_at",
    "started_at",
    "finished_at",
    "error",
    "duration_seconds",
]
STEP = "merlin.common.tasks.merlin_step"
LONG_NAME = "merlin.common.tasks." + "very_long_step_name_" * 6 + "end"
LONG_ERROR = "RuntimeError: " + "the solver diverged at step 12 " * 10 + "(tail)"


@pytest.fixture
def cli(
    request: pytest.FixtureRequest, store_backend: str, prefix: str, db: TrackingDatabase
) -> Cli:
    return store_cli(request, store_backend, prefix)


def now_us() -> int:
    return int(time.time() * 1_000_000)


@dataclass(frozen=True)
class Ledger:
    failing: str  # FAILED: 3 succeeded (0.1 s each), 22 failed, 1 still queued
    stalled: str  # STALLED: 1 succeeded, 2 lost with sim@n2, 3 waiting on "orphan"
    orphan: str  # STALLED: 1 task waiting on "nobody"


@pytest.fixture
def ledger(db: TrackingDatabase) -> Ledger:
    """A live worker sim@n1 and a worker sim@n2 that stops with two tasks in flight, both
    consuming ``sim``; nobody consumes ``orphan`` or ``nobody``."""
    lw = db.logical_workers.create("sim", ["sim"])
    db.physical_workers.create("sim@n1", pid=1, host="n1", logical_worker_id=lw.id, stale_after=60)
    db.physical_workers.create("sim@n2", pid=2, host="n2", logical_worker_id=lw.id, stale_after=60)

    failing = db.runs.create("sweep", "/ws/failing", ["sim"])
    t0 = now_us()
    events = []
    for i in range(3):  # published in order, 1 ms apart; 0.1 s of work each
        task = f"ok-{i}"
        events += [
            TaskEvent(failing.id, task, K.PUBLISHED, "sim", STEP, at=t0 + i * 1000),
            TaskEvent(failing.id, task, K.STARTED, worker="sim@n1", at=t0 + 10_000),
            TaskEvent(failing.id, task, K.SUCCEEDED, worker="sim@n1", at=t0 + 110_000),
        ]
    for i in range(22):
        task = f"bad-{i:02d}"
        events += [
            TaskEvent(failing.id, task, K.PUBLISHED, "sim", STEP, at=t0 + 5000 + i * 1000),
            TaskEvent(failing.id, task, K.STARTED, worker="sim@n1", at=t0 + 50_000),
            TaskEvent(
                failing.id,
                task,
                K.FAILED,
                worker="sim@n1",
                at=t0 + 60_000,
                error=f"ValueError: sample {i} is bad",
            ),
        ]
    events.append(TaskEvent(failing.id, "late", K.PUBLISHED, "sim", "merlin.late", at=t0 + 40_000))

    stalled = db.runs.create("sweep", "/ws/stalled", ["sim", "orphan"])
    events += [
        TaskEvent(stalled.id, "done", K.PUBLISHED, "sim", STEP, at=t0),
        TaskEvent(stalled.id, "done", K.STARTED, worker="sim@n1", at=t0 + 1000),
        TaskEvent(stalled.id, "done", K.SUCCEEDED, worker="sim@n1", at=t0 + 2000),
        TaskEvent(stalled.id, "held-0", K.PUBLISHED, "sim", STEP, at=t0 + 3000),
        TaskEvent(stalled.id, "held-0", K.RECEIVED, "sim", worker="sim@n2", at=t0 + 4000),
        TaskEvent(stalled.id, "held-1", K.PUBLISHED, "sim", STEP, at=t0 + 3000),
        TaskEvent(stalled.id, "held-1", K.STARTED, worker="sim@n2", at=t0 + 4000),
    ]
    events += [
        TaskEvent(stalled.id, f"wait-{i}", K.PUBLISHED, "orphan", "merlin.post", at=t0 + 5000)
        for i in range(3)
    ]
    orphan = db.runs.create("other", "/ws/orphan", ["nobody"])
    events.append(TaskEvent(orphan.id, "w", K.PUBLISHED, "nobody", "merlin.post", at=t0))
    db.runs.record_events(events)
    db.physical_workers.mark_stopped("sim@n2")  # held-0 and held-1 are LOST
    return Ledger(failing.id, stalled.id, orphan.id)


def table_rows(out: str) -> dict[str, list[str]]:
    """Rows of a task table by task id (the first cell), header and footer left out."""
    lines = out.splitlines()
    return {line.split()[0]: line.split() for line in lines[1:] if line and line[0] != " "}


# ---------------------------------------------------------------------------- runs tasks
def test_tasks_table_oldest_first_with_errors(
    cli: Cli, db: TrackingDatabase, ledger: Ledger
) -> None:
    out = ok(cli("runs", "tasks", ledger.failing))
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "STATE",
        "WORKER",
        "ATTEMPTS",
        "DURATION",
        "ERROR",
    ]
    ids = [line.split()[0] for line in lines[1:-1]]
    expected = [f"ok-{i}" for i in range(3)] + [f"bad-{i:02d}" for i in range(22)]
    expected.insert(expected.index("bad-21") + 1, "late")  # published at +40 ms, after bad-21 (+26)
    assert ids == expected
    assert lines[-1] == "26 tasks"
    rows = table_rows(out)
    assert rows["ok-0"][2:] == ["SUCCEEDED", "sim@n1", "1", "0.10s"]  # no error for a success
    assert rows["bad-03"][2:7] == ["FAILED", "sim@n1", "1", "0.01s", "ValueError:"]
    assert "ValueError: sampl" in lines[ids.index("bad-03") + 1]  # elided to fit: JSON has it all
    assert rows["late"][2:] == ["QUEUED", "-", "0", "-"]
    assert widest_line(out) <= 80
    assert ok(cli("runs", "tasks", "/ws/failing")) == out  # by workspace too


def test_tasks_table_without_failures_has_no_error_column(cli: Cli, ledger: Ledger) -> None:
    out = ok(cli("runs", "tasks", ledger.failing, "--state", "succeeded"))
    assert out.splitlines()[0].split() == ["ID", "NAME", "STATE", "WORKER", "ATTEMPTS", "DURATION"]
    assert out.splitlines()[-1] == "3 tasks"


def test_tasks_json(cli: Cli, ledger: Ledger) -> None:
    document = cli.json("runs", "tasks", ledger.failing)
    assert list(document) == ["run_id", "count", "tasks"]
    assert document["run_id"] == ledger.failing and document["count"] == 26
    tasks = {task["id"]: task for task in document["tasks"]}
    assert all(list(task) == TASK_KEYS for task in document["tasks"])
    assert tasks["ok-1"]["state"] == "SUCCEEDED" and tasks["ok-1"]["worker"] == "sim@n1"
    assert tasks["ok-1"]["duration_seconds"] == pytest.approx(0.1, abs=0.002)
    assert tasks["ok-1"]["name"] == STEP and tasks["ok-1"]["queue"] == "sim"
    assert tasks["bad-07"]["error"] == "ValueError: sample 7 is bad"
    assert tasks["late"]["duration_seconds"] is None and tasks["late"]["started_at"] is None
    assert tasks["late"]["run_id"] == ledger.failing and tasks["late"]["attempts"] == 0


def test_tasks_filters(cli: Cli, ledger: Ledger) -> None:
    def ids(run: str, *args: str) -> list[str]:
        return [task["id"] for task in cli.json("runs", "tasks", run, *args)["tasks"]]

    assert ids(ledger.failing, "--state", "FaIlEd") == [f"bad-{i:02d}" for i in range(22)]
    assert ids(ledger.stalled, "--state", "lost", "--state", "SUCCEEDED") == [
        "done",
        "held-0",
        "held-1",
    ]
    assert ids(ledger.stalled, "--worker", "sim@n2") == ["held-0", "held-1"]
    assert ids(ledger.stalled, "--queue", "orphan") == ["wait-0", "wait-1", "wait-2"]
    assert ids(ledger.stalled, "--queue", "orphan", "--state", "lost") == []
    assert ids(ledger.failing, "--name", "merlin.late") == ["late"]
    assert ids(ledger.failing, "--state", "failed", "--limit", "2") == ["bad-00", "bad-01"]
    assert ids(ledger.failing, "--limit", "0") == []

    limited = ok(cli("runs", "tasks", ledger.failing, "--state", "failed", "--limit", "2"))
    assert limited.splitlines()[-1] == "2 tasks of 22 matching"
    assert ok(cli("runs", "tasks", ledger.stalled, "--worker", "nobody")) == "No tasks match.\n"
    assert cli.json("runs", "tasks", ledger.orphan, "--state", "failed") == {
        "run_id": ledger.orphan,
        "count": 0,
        "tasks": [],
    }


def test_tasks_errors(cli: Cli, ledger: Ledger) -> None:
    err = fails(cli("runs", "tasks", ledger.failing, "--state", "bogus"), 2, "--state", "'bogus'")
    for state in ("QUEUED", "RECEIVED", "STARTED", "RETRY", "SUCCEEDED", "FAILED", "REVOKED"):
        assert state in err
    fails(cli("runs", "tasks", ledger.failing, "--state", "bogus", "--json"), 2, "LOST")
    fails(cli("runs", "tasks", "/no/such/ws"), 1, "no run matches '/no/such/ws'")
    fails(cli("runs", "tasks", "r999", "--json"), 1, "no run matches")
    fails(cli("runs", "tasks", ledger.failing, "--limit", "-1"), 2, "--limit")
    fails(cli("runs", "tasks"), 2, "Missing argument")


def test_tasks_of_a_run_whose_records_were_dropped(cli: Cli, db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/kept-counters", ["q"], task_retention=0)
    events = [TaskEvent(run.id, f"t{i}", K.PUBLISHED, "q") for i in range(3)]
    db.runs.record_events([*events, *(TaskEvent(run.id, f"t{i}", K.RAN) for i in range(3))])
    assert db.runs.get(run.id).status is RunStatus.COMPLETED

    out = ok(cli("runs", "tasks", run.id))
    assert out.startswith("No tasks match.\n")
    assert f"Run {run.id} counted 3 tasks, but its task records were dropped" in out
    assert f"merlin-tracking runs show {run.id}" in out
    assert widest_line(out) <= 80
    assert cli.json("runs", "tasks", run.id) == {"run_id": run.id, "count": 0, "tasks": []}
    assert cli.json("runs", "show", run.id)["run"]["counters"]["succeeded"] == 3
    # a filter that matches nothing in a run that keeps its records says nothing more
    assert ok(cli("runs", "tasks", run.id, "--state", "failed")).startswith("No tasks match.")


def test_tasks_table_fits_80_columns_with_long_values(cli: Cli, db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/long", ["q"])
    task_id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    worker = "merlin_step_worker.with.a.long.name@node-0042.cluster.example.org"
    db.runs.record_events(
        [
            TaskEvent(run.id, task_id, K.PUBLISHED, "q", LONG_NAME),
            TaskEvent(run.id, task_id, K.STARTED, worker=worker),
            TaskEvent(run.id, task_id, K.FAILED, worker=worker, error=LONG_ERROR),
        ]
    )
    out = ok(cli("runs", "tasks", run.id))
    assert widest_line(out) <= 80
    row = out.splitlines()[1]
    assert row.startswith("1b4e28") and "…" in row and "FAILED" in row
    name = row.split()[1]
    assert name.startswith("…") and LONG_NAME.endswith(name[1:])  # the name keeps its end
    show = ok(cli("runs", "show", run.id))
    assert widest_line(show) <= 80 and "Failed tasks (1)" in show
    document = cli.json("runs", "tasks", run.id)
    assert document["tasks"][0]["error"] == LONG_ERROR  # JSON is never elided
    assert document["tasks"][0]["name"] == LONG_NAME


# ---------------------------------------------------------------------------- runs show
def test_show_lists_the_first_failed_tasks(cli: Cli, ledger: Ledger) -> None:
    out = ok(cli("runs", "show", ledger.failing))
    assert "FAILED" in out
    assert "failed 22" in out and "lost 0" in out
    for label in ("Started", "Finished", "Duration"):
        assert any(line.startswith(label) for line in out.splitlines()), label
    lines = out.splitlines()
    at = lines.index("Failed tasks (22)")
    assert lines[at + 1].split() == ["ID", "NAME", "WORKER", "ERROR"]
    assert [line.split()[0] for line in lines[at + 2 : at + 7]] == [
        f"bad-{i:02d}" for i in range(5)
    ]
    assert "ValueError: sample 0 is bad" in lines[at + 2]
    assert lines[at + 7] == (
        f"… and 17 more: merlin-tracking runs tasks {ledger.failing} --state failed"
    )
    assert "Lost tasks" not in out and "Stalled" not in out
    assert widest_line(out) <= 80

    document = cli.json("runs", "show", ledger.failing)
    assert [t["id"] for t in document["failed_tasks"]] == [f"bad-{i:02d}" for i in range(20)]
    assert all(list(t) == TASK_KEYS for t in document["failed_tasks"])
    assert document["failed_tasks"][0]["error"] == "ValueError: sample 0 is bad"
    assert document["lost_tasks"] == [] and document["stalled_reason"] is None


def test_show_says_why_a_run_is_stalled(cli: Cli, db: TrackingDatabase, ledger: Ledger) -> None:
    run = db.runs.get(ledger.stalled)
    assert run.status is RunStatus.STALLED and run.tasks_lost == 2
    out = ok(cli("runs", "show", ledger.stalled))
    lines = out.splitlines()
    assert "Status     STALLED" in lines
    at = lines.index("Stalled    2 tasks lost with dead worker sim@n2;")
    assert lines[at + 1] == "           3 waiting on queue orphan, which no live worker consumes"
    assert "lost 2" in out
    lost = lines.index("Lost tasks (2)")
    assert [line.split()[0] for line in lines[lost + 2 : lost + 4]] == ["held-0", "held-1"]
    assert all("sim@n2" in line for line in lines[lost + 2 : lost + 4])
    assert "Failed tasks" not in out
    assert any(line.startswith("Duration") and line.endswith("so far") for line in lines)
    assert widest_line(out) <= 80

    document = cli.json("runs", "show", ledger.stalled)
    assert document["run"]["status"] == "STALLED" and document["run"]["active"] is True
    assert document["run"]["tasks_lost"] == 2 and document["run"]["counters"]["lost"] == 2
    assert document["stalled_reason"] == (
        "2 tasks lost with dead worker sim@n2; 3 waiting on queue orphan, which no live worker "
        "consumes"
    )
    assert [t["id"] for t in document["lost_tasks"]] == ["held-0", "held-1"]
    assert all(t["state"] == "LOST" and "sim@n2" in t["error"] for t in document["lost_tasks"])
    assert document["failed_tasks"] == []


def test_show_stalled_on_one_queue_is_one_line(cli: Cli, ledger: Ledger) -> None:
    out = ok(cli("runs", "show", ledger.orphan))
    assert "Stalled    1 waiting on queue nobody, which no live worker consumes" in out.splitlines()
    assert "Lost tasks" not in out


def test_a_worker_for_the_queue_clears_the_stall(
    cli: Cli, db: TrackingDatabase, ledger: Ledger
) -> None:
    lw = db.logical_workers.create("post", ["nobody"])
    db.physical_workers.create("post@n3", pid=3, logical_worker_id=lw.id, stale_after=60)
    db.logical_workers.attach_to_active_runs(lw.id)  # as the worker bootstep does
    document = cli.json("runs", "show", ledger.orphan)
    assert document["run"]["status"] == "QUEUED" and document["stalled_reason"] is None
