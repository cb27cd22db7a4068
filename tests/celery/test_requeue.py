"""Requeueing lost work (``tracking_keep_messages`` and ``runs requeue RUN --lost``) with real
workers: a task lost with a killed worker is published again once, however many requeues run
at the same time, and runs to completion on another worker, counted once."""

from __future__ import annotations

import signal
import threading

import pytest
from click.testing import CliRunner

from merlin_tracking import RunStatus, TaskState
from merlin_tracking.cli.main import cli
from merlin_tracking.requeue import RequeueReport, requeue_lost
from tests.support.processes import STALE_AFTER, Ledger, exact, wait_until

pytestmark = pytest.mark.slow

KEEP = {"MERLIN_TRACKING_KEEP_MESSAGES": "true"}


def lose_a_task(ledger: Ledger, env: dict[str, str]) -> tuple[str, str]:
    """Launch one 5 s task, kill its worker mid-task; return (run id, task id) once LOST."""
    victim, _ = ledger.start_running("solo", env=env)
    client = ledger.client()
    run = ledger.launch(client, client.signature("plain_app.sleeper", args=(5,)))
    wait_until(
        lambda: ledger.db.tasks.get_all({"run_id": run.id, "state": "started"}),
        30,
        "the task to start",
    )
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    (task,) = wait_until(
        lambda: ledger.db.tasks.get_all({"run_id": run.id, "state": "lost"}),
        STALE_AFTER + 10,
        "the task to be lost",
    )
    return run.id, task.id


def test_concurrent_requeues_publish_a_lost_task_once_and_it_completes(ledger: Ledger) -> None:
    run_id, task_id = lose_a_task(ledger, KEEP)
    db = ledger.db
    assert db.tasks.kept_message_ids(run_id) == {task_id}
    preview = requeue_lost(db, run_id, None, dry_run=True)
    assert preview == RequeueReport(run_id, True, requeued=(task_id,))
    reports: list[RequeueReport] = []
    start = threading.Barrier(4)

    def requeue() -> None:
        start.wait(10)
        reports.append(requeue_lost(ledger.db, run_id, ledger.redis_url))

    threads = [threading.Thread(target=requeue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(len(r.requeued) for r in reports) == [0, 0, 0, 1], reports
    assert all(not r.failed for r in reports)
    requeued = db.tasks.get(task_id)
    assert requeued.state is TaskState.QUEUED and db.runs.get(run_id).tasks_lost == 0
    survivor, _ = ledger.start_running("solo", env=KEEP)
    done = ledger.wait_run(run_id, RunStatus.COMPLETED)
    assert done.counters == exact(1)
    final = db.tasks.get(task_id)
    assert (final.state, final.worker, final.attempts) == (TaskState.SUCCEEDED, survivor.node, 2)
    assert db.tasks.kept_message_ids(run_id) == set()  # dropped once the task finished


def test_the_command_line_requeues_and_says_what_it_could_not(ledger: Ledger) -> None:
    run_id, task_id = lose_a_task(ledger, {})  # messages not kept
    runner = CliRunner()
    base = ["--url", ledger.redis_url, "--prefix", ledger.prefix, "runs", "requeue", run_id]
    result = runner.invoke(cli, [*base, "--lost", "--broker", ledger.redis_url, "--yes"])
    assert result.exit_code == 0, result.output
    assert f"Not requeued {task_id}: no kept message" in result.output
    assert "tracking_keep_messages" in result.output
    assert ledger.db.tasks.get(task_id).state is TaskState.LOST
    missing = runner.invoke(cli, [*base])
    assert missing.exit_code == 2 and "--lost" in missing.output
