"""Workers in batch allocations, with real ``celery worker`` processes: each scheduler's
environment (set as the scheduler sets it) on the physical worker record, the end time asked of
a fake scheduler command on PATH once and with a timeout, tasks lost when the allocation ended,
``workers drain --job`` and the self-drain of ``tracking_drain_before_end``."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from celery import Celery, group
from click.testing import CliRunner

from merlin_tracking import RunStatus, TaskState
from merlin_tracking.cli import cli
from tests.support.processes import STALE_AFTER, START_TIMEOUT, Ledger, unique, wait_until
from tests.test_schedulers import fake_command

pytestmark = pytest.mark.slow

NODEFILE_HOSTS = "cn01\ncn01\ncn02\n"


def scheduler_env(kind: str, tmp_path: Path, job_id: str) -> dict[str, str]:
    """The variables each scheduler sets in a job's environment (tests/test_schedulers.py
    checks them one by one)."""
    if kind == "slurm":
        return {
            "SLURM_JOB_ID": job_id,
            "SLURM_JOB_NAME": "sweep",
            "SLURM_JOB_NODELIST": "cn[01-02]",
        }
    if kind == "flux":
        return {"FLUX_JOB_ID": job_id}
    if kind == "lsf":
        return {"LSB_JOBID": job_id, "LSB_JOBNAME": "sweep", "LSB_MCPU_HOSTS": "cn01 4 cn02 4"}
    nodefile = tmp_path / "PBS_NODEFILE"
    nodefile.write_text(NODEFILE_HOSTS)
    return {"PBS_JOBID": job_id, "PBS_JOBNAME": "sweep", "PBS_NODEFILE": str(nodefile)}


END_LOCAL = datetime(2030, 5, 1, 12, 0)  # what the fake commands say, in local time
FAKE_ANSWERS = {
    "slurm": ("squeue", END_LOCAL.isoformat()),
    "flux": ("flux", "7200"),
    "lsf": ("bjobs", "2:00 L"),
    "pbs": (
        "qstat",
        "Job Id: j\n    Resource_List.walltime = 02:00:00\n"
        f"    stime = {(END_LOCAL - timedelta(hours=2)).strftime('%a %b %d %H:%M:%S %Y')}\n",
    ),
}


def path_with(folder: Path) -> str:
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.parametrize("kind", ["slurm", "flux", "lsf", "pbs"])
def test_a_worker_records_its_allocation(ledger: Ledger, tmp_path: Path, kind: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command, answer = FAKE_ANSWERS[kind]
    calls = fake_command(bin_dir, command, answer)
    job_id = unique("job")
    env = {**scheduler_env(kind, tmp_path, job_id), "PATH": path_with(bin_dir)}
    started = datetime.now(timezone.utc)
    worker, record = ledger.start_running("solo", env=env)
    assert (record.scheduler, record.job_id) == (kind, job_id)
    if kind != "flux":  # Flux puts no name or node list in the job's environment
        assert record.job_name == "sweep"
        assert record.job_nodes == ("cn[01-02]" if kind == "slurm" else "cn01,cn02")
    assert record.job_ends_at is not None
    if kind in ("slurm", "pbs"):
        assert record.job_ends_at == END_LOCAL.astimezone(timezone.utc)
    else:  # time left from now: two hours
        assert abs(record.job_ends_at - started - timedelta(hours=2)) < timedelta(minutes=1)
    assert [w.name for w in ledger.db.physical_workers.get_all({"job_id": job_id})] == [worker.node]
    # Asked once, whatever the beats and re-registrations since.
    client = ledger.client()
    ledger.wait_control(client, worker)
    client.control.add_consumer(unique("q2"), destination=[worker.node], reply=True)
    wait_until(
        lambda: len(ledger.db.physical_workers.get(record.id).args["queues"]) == 2,
        START_TIMEOUT,
        "the worker to record its second queue",
    )
    assert len(calls.read_text().splitlines()) == 1


def test_a_hanging_scheduler_command_delays_start_by_its_timeout_only(
    ledger: Ledger, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = fake_command(bin_dir, "squeue", "2030-05-01T12:00:00", delay=120)
    env = {"SLURM_JOB_ID": "777", "PATH": path_with(bin_dir)}
    _, record = ledger.start_running("solo", env=env)
    assert (record.job_id, record.job_ends_at) == ("777", None)
    assert calls.read_text().split() == ["-h", "-t", "all", "-j", "777", "-o", "%e"]


def test_tasks_lost_after_the_allocation_ended_name_it(ledger: Ledger) -> None:
    ends = datetime.now(timezone.utc) + timedelta(seconds=4)
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_END_TIME": str(int(ends.timestamp()))}
    victim, record = ledger.start_running("solo", env=env)
    assert record.job_ends_at == ends.replace(microsecond=0)
    client = ledger.client()
    run = ledger.launch(client, client.signature("plain_app.sleeper", args=(60,)))
    wait_until(
        lambda: ledger.db.tasks.get_all({"run_id": run.id, "state": "STARTED"}),
        30,
        "the task to start",
    )
    wait_until(lambda: datetime.now(timezone.utc) > record.job_ends_at, 10, "the end time")
    victim.signal(signal.SIGKILL)  # what the scheduler does at the end, past its grace time
    victim.wait(10)
    reader = ledger.db

    def lost() -> str | None:
        (task,) = reader.tasks.get_all({"run_id": run.id})
        return task.error if task.state is TaskState.LOST else None

    error = wait_until(lost, STALE_AFTER + 10, "the task to be lost")
    assert error.startswith(
        f"allocation 4242 (slurm) ended at {record.job_ends_at.isoformat()}; "
        f"worker {victim.node} stopped heartbeating at "
    )
    assert reader.runs.get(run.id).status is RunStatus.STALLED


def consumes_nothing(app: Celery, node: str) -> bool:
    """The worker answers, and consumes no queue (Celery applies a cancel_consumer in its
    consumer's loop, soon after it replied)."""
    replies = app.control.inspect([node], timeout=1).active_queues() or {}
    return replies.get(node) == []


def _drain_cli(ledger: Ledger, *args: str) -> dict[str, object]:
    base = ["--url", ledger.redis_url, "--prefix", ledger.prefix, "workers", "drain"]
    result = CliRunner().invoke(
        cli, [*base, *args, "--broker", ledger.redis_url, "--yes", "--json"]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_drain_by_job_finishes_running_tasks_and_takes_no_new_one(ledger: Ledger) -> None:
    ending, _ = ledger.start_running("threads", env={"SLURM_JOB_ID": "1001"}, concurrency=2)
    client = ledger.client()
    ledger.wait_control(client, ending)
    long = ledger.launch(client, client.signature("plain_app.sleeper", args=(3,)))
    wait_until(
        lambda: ledger.db.tasks.get_all({"run_id": long.id, "state": "STARTED"}),
        30,
        "the long task to start",
    )
    other, _ = ledger.start_running("solo", env={"SLURM_JOB_ID": "1002"})
    report = _drain_cli(ledger, "--job", "1001")
    assert report["drained"] == [ending.node] and report["silent"] == []
    assert report["workers"] == [{"name": ending.node, "job_id": "1001", "queues": [ledger.queue]}]
    wait_until(lambda: consumes_nothing(client, ending.node), 15, "the drain to apply")
    fresh = ledger.launch(client, group(client.signature("plain_app.noop") for _ in range(4)))
    ledger.wait_run(fresh.id, RunStatus.COMPLETED)
    assert {t.worker for t in ledger.db.tasks.get_all({"run_id": fresh.id})} == {other.node}
    ledger.wait_run(long.id, RunStatus.COMPLETED)  # the running task finished where it ran
    (done,) = ledger.db.tasks.get_all({"run_id": long.id})
    assert (done.state, done.worker) == (TaskState.SUCCEEDED, ending.node)


def test_a_worker_drains_itself_before_its_allocation_ends(ledger: Ledger) -> None:
    ends = datetime.now(timezone.utc) + timedelta(seconds=6)
    env = {
        "SLURM_JOB_ID": "2001",
        "SLURM_JOB_END_TIME": str(int(ends.timestamp())),
        "MERLIN_TRACKING_DRAIN_BEFORE_END": "4",
    }
    ending, _ = ledger.start_running("solo", env=env)
    client = ledger.client()
    ledger.wait_control(client, ending)

    wait_until(
        lambda: consumes_nothing(client, ending.node),
        15,
        "the worker to stop consuming",
        interval=0.2,
        on_timeout=ending.logs,
    )
    assert datetime.now(timezone.utc) < ends  # before the end, not at it
    assert "stopped consuming" in ending.stderr()
    other, _ = ledger.start_running("solo")
    run = ledger.launch(client, client.signature("plain_app.noop"))
    ledger.wait_run(run.id, RunStatus.COMPLETED)
    (task,) = ledger.db.tasks.get_all({"run_id": run.id})
    assert task.worker == other.node
