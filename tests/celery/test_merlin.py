"""Real Merlin: our ledger of a ``hello_samples`` study against Merlin's own database.

Merlin 2.0.0b4 comes from the package registry into a cached venv, with this repository
installed into it (``tests/support/merlin.py``). That install is the whole set-up: no resolver
setting, no hook module, nothing about tracking in Merlin's ``app.yaml``. The workers get only
``MERLIN_TRACKING_PREFIX`` (so the test reads its own keys); the ledger's URL is not given and
must default to Merlin's Redis results backend, and the run resolver must default to ``auto``.

The study runs against a Redis server of its own (Merlin's records have no prefix), the way a
user runs it: ``merlin example``, ``merlin run``, ``merlin run-workers``, ``merlin
stop-workers``. Then the two ledgers must agree on the study, the run (workspace, queues,
status), the logical workers and their physical workers (names, pid, status while running and
after the stop), our run must complete with Merlin's, and our counters and task records must
match what the worker log says it received and ran. A second run sets the spec's
``overlap: true``, under which Merlin stamps each launch's node name.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from merlin_tracking import (
    PhysicalWorker,
    Run,
    RunStatus,
    TaskState,
    TrackingDatabase,
    WorkerStatus,
)
from tests.support.merlin import (
    HelloSamples,
    MerlinRecords,
    WorkerLog,
    merlin_venv,
)
from tests.support.redis_server import RedisServer, RedisServerError

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 90.0  # merlin run-workers -> both runs COMPLETED (about 2.5 s here)
COMPLETION_SLACK = 2.0  # seconds our run may complete after (or before) Merlin's
HELLO_TASKS = 17  # messages of one hello_samples run (3 expand, 2 add-chain, 7 steps, ...)
MARK_COMPLETE = "merlin:mark_run_as_complete"


@pytest.fixture(scope="module")
def venv() -> Path:
    return merlin_venv()


@pytest.fixture
def merlin_redis() -> Iterator[str]:
    """A Redis server for this study alone: Merlin keeps its records unprefixed."""
    try:
        server = RedisServer(name="mt-merlin-redis-").start()
    except RedisServerError as exc:
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.close()


@dataclass
class Observed:
    """Everything the comparison reads, taken while the study ran and after its workers stopped."""

    workspace: str
    queue: str  # Merlin's queue of the study: "[merlin]_" + the steps' task_queue
    merlin_completed: datetime  # first poll that saw Merlin's run COMPLETED
    ours_completed: datetime  # first poll that saw our run COMPLETED
    merlin_running: MerlinRecords  # `merlin database get everything`, workers up
    physical_running: list[PhysicalWorker]
    merlin_stopped: MerlinRecords  # the same after `merlin stop-workers`
    log: WorkerLog


def wait_for_both(study: HelloSamples, db: TrackingDatabase) -> tuple[datetime, datetime]:
    """Poll Merlin's run and ours until both are COMPLETED; when each was first seen so."""
    merlin_seen: datetime | None = None
    ours_seen: datetime | None = None
    deadline = time.monotonic() + RUN_TIMEOUT
    while merlin_seen is None or ours_seen is None:
        now = datetime.now(timezone.utc)
        if merlin_seen is None:
            status = study.run_status()
            assert status not in ("FAILED", "CANCELLED"), f"Merlin's run {status}{study.logs()}"
            if status == "COMPLETED":
                merlin_seen = now
        if ours_seen is None:
            run = db.runs.find(study.workspace)
            if run is not None and run.status is RunStatus.COMPLETED:
                ours_seen = now
        if time.monotonic() > deadline:
            pytest.fail(
                f"after {RUN_TIMEOUT:g} s: Merlin's run {study.run_status()}, ours "
                f"{db.runs.find(study.workspace)}{study.logs()}"
            )
        time.sleep(0.05)
    return merlin_seen, ours_seen


def run_study(
    venv: Path, redis_url: str, prefix: str, root: Path, overlap: bool = False
) -> Observed:
    db = TrackingDatabase.from_url(redis_url, prefix=prefix)
    env = {"MERLIN_TRACKING_PREFIX": prefix}  # the only tracking setting anywhere
    with HelloSamples(venv, redis_url, root, env, overlap=overlap) as study:
        study.prepare()
        workspace = study.run()
        study.start_workers()
        merlin_completed, ours_completed = wait_for_both(study, db)
        merlin_running = study.database()
        physical_running = db.physical_workers.get_all()
        study.stop_workers()
        merlin_stopped = study.database()
    return Observed(
        workspace,
        study.queue,
        merlin_completed,
        ours_completed,
        merlin_running,
        physical_running,
        merlin_stopped,
        WorkerLog.read(study.worker_log),
    )


# --------------------------------------------------------------------------- shared checks
def check_defaults(root: Path, redis_url: str, prefix: str) -> None:
    """The defaults did it: Merlin's results backend is the ledger (its app sets
    ``result_backend`` to the Redis URL of ``app.yaml``), ``auto`` the resolver, and nothing
    fell back to a SQLite file (it would sit under the study's HOME)."""
    started = f"merlin_tracking: ledger {redis_url} (prefix {prefix}); run resolver 'auto'"
    assert started in (root / "workers.log").read_text(errors="replace")
    assert not (root / "home" / ".local" / "share" / "merlin_tracking").exists()


def check_study_and_run(db: TrackingDatabase, seen: Observed) -> Run:
    merlin_run = seen.merlin_running.run(seen.workspace)
    [merlin_study] = seen.merlin_running.of("Study")
    run = db.runs.get(seen.workspace)
    assert db.runs.get_all() == [run], "one study run, one run in our ledger"
    assert run.study_id is not None
    assert db.studies.get(run.study_id).name == merlin_study["Name"] == "hello_samples"
    assert merlin_run["Study"] == [{"ID": merlin_study.id, "Name": merlin_study["Name"]}]
    assert run.workspace == merlin_run["Workspace"] == seen.workspace
    assert sorted(run.queues) == sorted(merlin_run["Queues"]) == [seen.queue]
    assert run.status is RunStatus.COMPLETED
    assert merlin_run["Run Status"] == "COMPLETED"
    return run


def logical_workers(db: TrackingDatabase, run: Run) -> dict[str, tuple[list[str], list[str]]]:
    """Our logical workers of ``run``: name -> (queues, names of its physical workers)."""
    found = {}
    for logical in db.logical_workers.get_many(run.workers):
        physical = db.physical_workers.get_many(logical.physical_workers)
        found[logical.name] = (sorted(logical.queues), sorted({p.name for p in physical}))
    return found


def merlin_logical_workers(
    records: MerlinRecords, workspace: str
) -> dict[str, tuple[list[str], list[str]]]:
    """The same from Merlin's records."""
    found = {}
    for worker_id in records.run(workspace)["Workers"]:
        logical = records.by_id("Logical Worker", worker_id)
        physical = sorted({item["Name"] for item in logical["Physical Workers"]})
        found[logical["Name"]] = (sorted(logical["Queues"]), physical)
    return found


def check_completion(run: Run, seen: Observed) -> None:
    """Our run completed with Merlin's, not after a settle delay. Merlin's run record holds no
    time, so the references are the log line of mark_run_as_complete's success (Merlin marks
    its run inside that task) and the poll that first saw Merlin's run COMPLETED."""
    marked = seen.log.last("succeeded", MARK_COMPLETE).at
    assert run.finished_at is not None
    gap = (run.finished_at - marked).total_seconds()
    assert abs(gap) <= COMPLETION_SLACK, f"finished_at {run.finished_at}, log {marked}"
    lag = (seen.ours_completed - seen.merlin_completed).total_seconds()
    assert abs(lag) <= COMPLETION_SLACK, f"our run read COMPLETED {lag:.2f} s after Merlin's"


def check_counters_and_tasks(db: TrackingDatabase, run: Run, seen: Observed, node: str) -> None:
    """Counters: what the worker log says it received and ran, nothing failed or lost; one task
    record per task, under Merlin's task names, each run once by the worker ``node``."""
    log = seen.log
    received, succeeded = log.tasks("received"), log.tasks("succeeded")
    assert len(received) == log.count("received") == HELLO_TASKS, log.names("received")
    assert succeeded == received
    assert log.count("raised") == 0
    assert run.counters == {
        "queued": len(received),
        "started": len(received),
        "succeeded": len(succeeded),
        "failed": 0,
        "retried": log.count("retry"),
        "revoked": 0,
        "lost": 0,
    }
    tasks = db.tasks.get_all({"run_id": run.id})
    assert len(tasks) == len(received)
    assert {task.id: task.name for task in tasks} == received
    assert Counter(task.name for task in tasks) == log.names("received")
    assert {(task.state, task.queue, task.worker, task.attempts) for task in tasks} == {
        (TaskState.SUCCEEDED, seen.queue, node, 1)
    }


# --------------------------------------------------------------------------- the tests
def test_hello_samples_ledger_agrees_with_merlins_own(
    venv: Path, merlin_redis: str, prefix: str, tmp_path: Path
) -> None:
    seen = run_study(venv, merlin_redis, prefix, tmp_path)
    db = TrackingDatabase.from_url(merlin_redis, prefix=prefix)
    check_defaults(tmp_path, merlin_redis, prefix)
    run = check_study_and_run(db, seen)

    # Logical workers of the run (names, queues) and their physical workers (node names).
    ours = logical_workers(db, run)
    assert ours == merlin_logical_workers(seen.merlin_running, seen.workspace)
    assert ours == {"default_worker": ([seen.queue], ["celery@default_worker.%h"])}

    # The physical worker, while it ran and once stopped: same process, same status.
    [merlin_physical] = seen.merlin_running.of("Physical Worker")
    [physical] = seen.physical_running
    assert physical.name == merlin_physical["Name"]
    assert (physical.status, merlin_physical["Worker Status"]) == (WorkerStatus.RUNNING, "RUNNING")
    assert physical.pid == int(merlin_physical["Process ID"])
    [merlin_stopped] = seen.merlin_stopped.of("Physical Worker")
    stopped = db.physical_workers.get(physical.id)
    assert (stopped.status, stopped.pid) == (WorkerStatus.STOPPED, None)
    assert (merlin_stopped["Worker Status"], merlin_stopped["Process ID"]) == ("STOPPED", None)

    check_completion(run, seen)
    check_counters_and_tasks(db, run, seen, physical.name)


def test_overlap_launches_are_physical_workers_of_merlins_logical_worker(
    venv: Path, merlin_redis: str, prefix: str, tmp_path: Path
) -> None:
    """``overlap: true``: Merlin starts ``-n default_worker<YYYYmmdd-HHMMSS>.%%h``; the
    logical worker is still the spec's ``default_worker``, the launch one physical worker."""
    seen = run_study(venv, merlin_redis, prefix, tmp_path, overlap=True)
    db = TrackingDatabase.from_url(merlin_redis, prefix=prefix)
    check_defaults(tmp_path, merlin_redis, prefix)
    run = check_study_and_run(db, seen)

    [physical] = seen.physical_running
    assert re.fullmatch(r"celery@default_worker\d{8}-\d{6}\.%h", physical.name), physical.name
    assert logical_workers(db, run) == {"default_worker": ([seen.queue], [physical.name])}
    # Merlin 2.0.0b4 names the logical worker the same, but records no physical worker for the
    # launch: its celeryd_init handler looks the logical worker up by the stamped name.
    merlin = merlin_logical_workers(seen.merlin_running, seen.workspace)
    assert merlin == {"default_worker": ([seen.queue], [])}
    assert seen.merlin_running.of("Physical Worker") == []

    check_completion(run, seen)
    check_counters_and_tasks(db, run, seen, physical.name)
