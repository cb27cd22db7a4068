"""The tracking Redis loses its data, or its scripts, mid-study, under real ``celery worker``s.

The tracking store is a private redis-server of the test (``MERLIN_TRACKING_URL`` for the
worker subprocess, ``tracking_url`` for the launching app); broker and result backend stay on the
session Redis. A study is a chain: a task, a sleeper, then a group its worker publishes. While
the sleeper sleeps the tracking server is restarted without its dump, or emptied by FLUSHALL and
SCRIPT FLUSH. The live worker must be recorded again within a heartbeat or two, and the run must
come back under its id and workspace, marked recovered, counting exactly the tasks that reported
after the loss (the sleeper and the group), with no task failing. A SCRIPT FLUSH storm during a
study must lose nothing.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest
import redis
from celery import Celery, chain, group, states
from celery.canvas import Signature
from celery.result import AsyncResult

from merlin_tracking import Run, RunStatus, TrackingDatabase, WorkerStatus
from merlin_tracking.signals import install, launch_study
from tests.support.processes import (
    CLIENT_APPS,
    HEARTBEAT,
    RUN_TIMEOUT,
    START_TIMEOUT,
    Ledger,
    Worker,
    exact,
    unique,
    wait_until,
)
from tests.support.redis_server import RedisServer

GROUP = 8  # tasks of the group the sleeper's worker publishes after the loss
SLEEP = 3.0  # seconds the sleeper sleeps: the loss happens meanwhile
SETTLE = "0.5"  # tracking_settle_seconds of the workers (runs counted at workers)


@pytest.fixture(autouse=True)
def _collect_results() -> Iterator[None]:
    """Result objects unsubscribe when collected: let them while the session Redis is up."""
    yield
    gc.collect()


@pytest.fixture
def tracking_server() -> Iterator[RedisServer]:
    server = RedisServer(name="mt-lossy-").start()
    try:
        yield server
    finally:
        server.close()


def restart_empty(server: RedisServer) -> None:
    """A restart that lost everything: stopped, its dump deleted, started again."""
    server.stop()
    os.remove(os.path.join(server.dir, "dump.rdb"))
    server.start()


def flush_all(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        client.flushall()
        client.script_flush()
    finally:
        client.close()


LOSSES: dict[str, Callable[[RedisServer], None]] = {
    "restart": restart_empty,
    "flushall": flush_all,
}


def start_worker(
    ledger: Ledger, server: RedisServer, resolver: str | None = None
) -> tuple[Worker, TrackingDatabase]:
    env = {"MERLIN_TRACKING_URL": server.url, "MERLIN_TRACKING_SETTLE_SECONDS": SETTLE}
    if resolver is not None:
        env["MERLIN_TRACKING_RUN_RESOLVER"] = resolver
    worker = ledger.start("prefork", concurrency=2, env=env)
    tdb = TrackingDatabase.from_url(server.url, prefix=ledger.prefix)
    wait_until(lambda: recorded(tdb, worker), START_TIMEOUT, "the worker recorded")
    return worker, tdb


def recorded(tdb: TrackingDatabase, worker: Worker) -> bool:
    """The worker's physical record (RUNNING, its pid) and its logical record are stored."""
    if worker.proc.poll() is not None:
        pytest.fail(f"worker {worker.node} exited{worker.logs()}")
    for record in tdb.physical_workers.get_all({"name": worker.node}):
        if record.status is WorkerStatus.RUNNING and record.pid == worker.pid:
            logical = tdb.logical_workers.find(record.logical_worker_id)
            return logical is not None and logical.queues == tuple(worker.queues)
    return False


def client_app(ledger: Ledger, tracking_url: str | None) -> Celery:
    """An app publishing to the worker's queue: tracked into ``tracking_url``, else untracked."""
    app = Celery(unique("client"), broker=ledger.redis_url, backend=ledger.redis_url)
    app.conf.update(
        task_default_queue=ledger.queue,
        tracking_prefix=ledger.prefix,
        broker_connection_retry_on_startup=True,
    )
    if tracking_url is None:
        app.conf.tracking_enabled = False
        assert install(app) is None  # registered as untracked: no other tracker reports it
    else:
        app.conf.tracking_url = tracking_url
        assert install(app) is not None
    CLIENT_APPS.append(app)
    app.set_current()
    return app


def study(app: Celery, root_id: str, sleeper_id: str) -> Signature:
    """noop, sleeper, then a group of noops (immutable: no result is passed on)."""
    return chain(
        app.signature("plain_app.noop", immutable=True).set(task_id=root_id),
        app.signature("plain_app.sleeper", args=(SLEEP,), immutable=True).set(task_id=sleeper_id),
        group(app.signature("plain_app.noop", immutable=True) for _ in range(GROUP)),
    )


def find_run(tdb: TrackingDatabase, workspace: str) -> Run | None:
    return tdb.runs.find(workspace)


def lose_data_while_sleeping(
    tdb: TrackingDatabase, app: Celery, workspace: str, sleeper_id: str, lose: Callable[[], None]
) -> tuple[Run, datetime]:
    """Wait until the sleeper started (as the ledger says), then lose the data; return the run
    as it stood and when the loss began."""

    def sleeper_started() -> Run | None:
        run = find_run(tdb, workspace)
        return run if run is not None and run.tasks_started >= 2 else None

    before = wait_until(sleeper_started, RUN_TIMEOUT, "the sleeper recorded started")
    lost_at = datetime.now(timezone.utc)
    lose()
    # The loss happened inside the sleep: only the sleeper and the group report after it.
    assert app.backend.get_task_meta(sleeper_id)["status"] not in states.READY_STATES
    return before, lost_at


def assert_healed(
    tdb: TrackingDatabase,
    worker: Worker,
    before: Run,
    lost_at: datetime,
    study_name: str,
) -> Run:
    back = time.monotonic()
    wait_until(lambda: recorded(tdb, worker), 4 * HEARTBEAT + 2.0, "the worker recorded again")
    assert time.monotonic() - back <= 4 * HEARTBEAT + 2.0

    # It may read COMPLETED for a moment before the sleeper's worker process reports: the
    # record of the sleeper in flight was lost with the rest.
    def completed() -> Run | None:
        run = find_run(tdb, before.workspace)
        done = run is not None and run.status is RunStatus.COMPLETED
        return run if done and run.counters == exact(GROUP + 1) else None

    run = wait_until(completed, RUN_TIMEOUT, "the run back and COMPLETED", on_timeout=worker.logs)
    assert run.id == before.id
    assert run.counters == exact(GROUP + 1)  # the sleeper and the group, each once
    assert run.recovered_at is not None and run.recovered_at >= lost_at
    assert run.study_id is not None
    recovered_study = tdb.studies.get(run.study_id)
    assert recovered_study.name == study_name and run.id in recovered_study.runs
    (physical,) = tdb.physical_workers.get_all({"name": worker.node})
    assert physical.logical_worker_id in run.workers
    stderr = worker.stderr()
    assert "Traceback" not in stderr and "dropping" not in stderr, worker.logs()
    assert "vanished from the store" in stderr
    return run


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_launched_study_heals_after_the_store_lost_its_data(
    ledger: Ledger, tracking_server: RedisServer, loss: str
) -> None:
    worker, tdb = start_worker(ledger, tracking_server)
    app = client_app(ledger, tracking_server.url)
    root_id, sleeper_id = str(uuid.uuid4()), str(uuid.uuid4())
    study_name, workspace = unique("study"), unique("ws")
    launched = launch_study(app, study_name, workspace, study(app, root_id, sleeper_id))
    before, lost_at = lose_data_while_sleeping(
        tdb, app, workspace, sleeper_id, lambda: LOSSES[loss](tracking_server)
    )
    assert before.id == launched.id
    assert_healed(tdb, worker, before, lost_at, study_name)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_resolved_workflow_heals_after_the_store_lost_its_data(
    ledger: Ledger, tracking_server: RedisServer, loss: str
) -> None:
    worker, tdb = start_worker(ledger, tracking_server, resolver="workflow")
    app = client_app(ledger, None)
    root_id, sleeper_id = str(uuid.uuid4()), str(uuid.uuid4())
    published = study(app, root_id, sleeper_id).apply_async()
    workspace = f"celery://plain_app/{root_id}"
    before, lost_at = lose_data_while_sleeping(
        tdb, app, workspace, sleeper_id, lambda: LOSSES[loss](tracking_server)
    )
    assert_healed(tdb, worker, before, lost_at, "plain_app.noop")
    # The group's results stay subscribed with the app: unsubscribe while the broker is up.
    for result in [*published.results, published.parent, published.parent.parent]:
        app.backend.remove_pending_result(result)


def test_a_script_flush_storm_mid_study_loses_nothing(
    ledger: Ledger, tracking_server: RedisServer
) -> None:
    worker, tdb = start_worker(ledger, tracking_server)
    app = client_app(ledger, tracking_server.url)
    tasks = 40
    sigs = [app.signature("plain_app.sleeper", args=(0.05,)) for _ in range(tasks)]
    ids = [sig.freeze().id for sig in sigs]
    stop, flushes = threading.Event(), [0]

    def flush_scripts() -> None:
        client = redis.Redis.from_url(tracking_server.url)
        while not stop.wait(0.02):
            client.script_flush()
            flushes[0] += 1
        client.close()

    flusher = threading.Thread(target=flush_scripts, daemon=True)
    flusher.start()
    try:
        run = launch_study(app, unique("study"), unique("ws"), group(sigs))
        results = [AsyncResult(task_id, app=app).get(timeout=RUN_TIMEOUT) for task_id in ids]
    finally:
        stop.set()
        flusher.join(10)
    assert results == [0.05] * tasks  # no task failed
    assert flushes[0] >= 10

    def completed() -> Run | None:
        current = tdb.runs.get(run.id)
        return current if current.status is RunStatus.COMPLETED else None

    final = wait_until(completed, RUN_TIMEOUT, "the run COMPLETED", on_timeout=worker.logs)
    assert final.counters == exact(tasks)
    assert final.recovered_at is None
    assert recorded(tdb, worker)
    stderr = worker.stderr()
    assert "Traceback" not in stderr and "dropping" not in stderr, worker.logs()


def test_a_worker_whose_logical_record_alone_vanished_registers_again(
    ledger: Ledger, tracking_server: RedisServer
) -> None:
    worker, tdb = start_worker(ledger, tracking_server)
    (physical,) = tdb.physical_workers.get_all({"name": worker.node})
    assert physical.logical_worker_id is not None
    tdb.logical_workers.delete(physical.logical_worker_id)
    wait_until(lambda: recorded(tdb, worker), 4 * HEARTBEAT + 2.0, "the worker recorded again")
    (again,) = tdb.physical_workers.get_all({"name": worker.node})
    assert again.id == physical.id  # the physical record stayed: only its link came back
