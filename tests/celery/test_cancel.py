"""``runs cancel`` stops the work with real workers: the run's waiting tasks are revoked so that
none starts after the command returns, ``--terminate`` stops the running ones (prefork), and
``--no-revoke`` only marks the ledger. Each worker answers a ping before the run is launched,
so that it listens to the revoke broadcast."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from celery import group

from merlin_tracking import Run, RunStatus, Task, TaskState
from merlin_tracking import cancel as cancel_module
from tests.support.cli import Cli, make_run
from tests.support.processes import APP, REPO_ROOT, Ledger, Worker, wait_until

pytestmark = pytest.mark.slow

FINISHED = {TaskState.SUCCEEDED, TaskState.REVOKED}


def live_worker(ledger: Ledger, pool: str, concurrency: int | None = None) -> Worker:
    worker, _ = ledger.start_running(pool, concurrency=concurrency)
    ledger.wait_control(ledger.client(), worker)
    return worker


def launch_sleepers(ledger: Ledger, count: int, seconds: float) -> Run:
    client = ledger.client()
    sleepers = group(client.signature("plain_app.sleeper", args=(seconds,)) for _ in range(count))
    return ledger.launch(client, sleepers)


def tasks_in(ledger: Ledger, run_id: str, *states: TaskState) -> list[Task]:
    return ledger.db.tasks.get_all({"run_id": run_id, "state": [s.value for s in states]})


def wait_started(ledger: Ledger, run_id: str, count: int) -> None:
    wait_until(
        lambda: len(tasks_in(ledger, run_id, TaskState.STARTED, TaskState.SUCCEEDED)) >= count,
        30,
        f"{count} tasks of the run started",
    )


def all_finished(ledger: Ledger, run_id: str, count: int, timeout: float = 30) -> list[Task]:
    """The run's ``count`` task records once every one is SUCCEEDED or REVOKED."""

    def probe() -> list[Task] | None:
        tasks = ledger.db.tasks.get_all({"run_id": run_id})
        done = len(tasks) == count and all(t.state in FINISHED for t in tasks)
        return tasks if done else None

    return wait_until(
        probe,
        timeout,
        "every task of the run finished or revoked",
        on_timeout=lambda: "".join(worker.logs(1500) for worker in ledger.workers),
    )


def cancel(ledger: Ledger, *args: str) -> Any:
    """``runs cancel ARGS --yes --json`` in-process (no $CELERY_BROKER_URL); its document and
    the time it returned."""
    result = Cli(ledger.redis_url, ledger.prefix)("runs", "cancel", *args, "--yes", "--json")
    returned = datetime.now(timezone.utc)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout), returned


@pytest.mark.parametrize(
    ("pool", "concurrency", "chunk"),
    [
        ("solo", None, cancel_module.CHUNK),
        ("prefork", 1, cancel_module.CHUNK),
        ("prefork", 2, cancel_module.CHUNK),
        ("prefork", 2, 7),  # several revoke messages; only the last one waits for replies
    ],
)
def test_cancel_revokes_the_waiting_tasks_and_none_starts_afterwards(
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    pool: str,
    concurrency: int | None,
    chunk: int,
) -> None:
    monkeypatch.setattr(cancel_module, "CHUNK", chunk)
    worker = live_worker(ledger, pool, concurrency)
    run = launch_sleepers(ledger, 40, 0.2)
    wait_started(ledger, run.id, 3)
    called = datetime.now(timezone.utc)
    document, returned = cancel(ledger, run.id, "--broker", ledger.redis_url)
    assert document["cancelled"] == [run.id] and document["revoke"] is True
    assert document["answered"] == [worker.node] and document["errors"] == []
    assert document["terminated"] == 0 and document["waiting"] == 0
    assert document["revoked"] > 0
    assert document["runs"] == [
        {"id": run.id, **{k: document[k] for k in ("revoked", "terminated", "running", "waiting")}}
    ]

    tasks = all_finished(ledger, run.id, 40)
    late = [t for t in tasks if t.started_at is not None and t.started_at > returned]
    assert late == [], late
    revoked = [t for t in tasks if t.state is TaskState.REVOKED]
    # Counted as waiting but started before the worker had the revoke: only tasks that
    # started while the command ran (the ledger hears of a start within a flush, 50 ms).
    racing = [t for t in tasks if t.started_at and t.started_at > called - timedelta(seconds=1)]
    assert 0 <= document["revoked"] - len(revoked) <= len(racing)
    final = ledger.db.runs.get(run.id)
    assert final.status is RunStatus.CANCELLED
    assert final.tasks_revoked == len(revoked) and final.tasks_succeeded == 40 - len(revoked)


def test_terminate_stops_the_running_tasks_under_prefork(ledger: Ledger) -> None:
    live_worker(ledger, "prefork", 2)
    run = launch_sleepers(ledger, 6, 30)
    wait_until(lambda: len(tasks_in(ledger, run.id, TaskState.STARTED)) == 2, 30, "2 tasks running")
    document, returned = cancel(ledger, run.id, "--terminate", "--broker", ledger.redis_url)
    assert (document["terminate"], document["terminated"], document["running"]) == (True, 2, 0)
    assert document["revoked"] == 4
    # Long before the 30 s sleeps would end, every task reads REVOKED, none started since.
    tasks = all_finished(ledger, run.id, 6, timeout=20)
    assert all(t.state is TaskState.REVOKED for t in tasks), tasks
    assert sum(1 for t in tasks if t.started_at is not None) == 2
    assert all(t.started_at < returned for t in tasks if t.started_at is not None)
    assert ledger.db.runs.get(run.id).tasks_revoked == 6


def test_no_revoke_only_marks_the_ledger(ledger: Ledger) -> None:
    live_worker(ledger, "solo")
    run = launch_sleepers(ledger, 8, 0.2)
    wait_started(ledger, run.id, 1)
    document, _ = cancel(ledger, run.id, "--no-revoke")
    assert document["revoke"] is False and document["answered"] == []
    assert (document["revoked"], document["terminated"]) == (0, 0)
    assert document["waiting"] + document["running"] >= 1
    tasks = all_finished(ledger, run.id, 8)
    assert all(t.state is TaskState.SUCCEEDED for t in tasks)  # today's behaviour: all ran
    final = ledger.db.runs.get(run.id)
    assert (final.status, final.tasks_succeeded) == (RunStatus.CANCELLED, 8)


def test_without_a_listening_worker_it_warns_and_later_workers_run_the_tasks(
    ledger: Ledger,
) -> None:
    run = launch_sleepers(ledger, 5, 0.1)
    wait_until(lambda: len(tasks_in(ledger, run.id, TaskState.QUEUED)) == 5, 10, "5 tasks queued")
    cli = Cli(ledger.redis_url, ledger.prefix)
    before = ledger.db.runs.get(run.id).status
    no_broker = cli("runs", "cancel", run.id, "--yes")
    assert no_broker.exit_code == 2, no_broker.output
    assert "no broker to revoke" in no_broker.stderr and "--no-revoke" in no_broker.stderr
    dry = cli.json("runs", "cancel", run.id, "--dry-run")
    assert (dry["dry_run"], dry["revoked"], dry["answered"]) == (True, 5, [])
    assert ledger.db.runs.get(run.id).status is before  # nothing changed so far

    result = cli("runs", "cancel", run.id, "--broker", ledger.redis_url, "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        f"Cancelled {run.id}  {run.workspace}",
        f"  {run.id}: 5 waiting tasks revoked",
    ]
    assert "no worker acknowledged the revoke" in result.stderr
    # The documented limit: a worker started afterwards never heard of the revoke.
    live_worker(ledger, "solo")
    tasks = all_finished(ledger, run.id, 5)
    assert all(t.state is TaskState.SUCCEEDED for t in tasks)
    assert ledger.db.runs.get(run.id).status is RunStatus.CANCELLED


def test_celery_tracking_cancel_revokes_through_the_apps_broker(ledger: Ledger) -> None:
    worker = live_worker(ledger, "prefork", 1)
    run = launch_sleepers(ledger, 20, 0.2)
    wait_started(ledger, run.id, 2)
    env = ledger.env()
    env.pop("CELERY_BROKER_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "tracking", "runs", "cancel", run.id, "--yes"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    returned = datetime.now(timezone.utc)
    out = completed.stdout.decode()
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    lines = out.splitlines()
    assert lines[0] == f"Cancelled {run.id}  {run.workspace}"
    assert lines[1].startswith(f"  {run.id}: ") and "waiting tasks revoked" in lines[1]
    assert lines[-1] == f"Revoke acknowledged by 1 worker: {worker.node}"
    tasks = all_finished(ledger, run.id, 20)
    assert [t for t in tasks if t.started_at is not None and t.started_at > returned] == []
    assert any(t.state is TaskState.REVOKED for t in tasks)


def test_a_broker_out_of_reach_is_exit_3_and_says_the_run_is_cancelled(ledger: Ledger) -> None:
    run = make_run(ledger.db, "study", "/ws/unreachable", [ledger.queue], queued=3, started=1)
    broker = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
    result = Cli(ledger.redis_url, ledger.prefix)(
        "runs", "cancel", run.id, "--broker", broker, "--yes"
    )
    assert result.exit_code == 3, result.output
    assert f"cancelled {run.id} in the ledger, but revoked no task" in result.stderr
    assert "redis://:***@127.0.0.1:1/0" in result.stderr and "hunter2" not in result.output
    assert ledger.db.runs.get(run.id).status is RunStatus.CANCELLED
