"""Worker records, install() and its settings, and runs created by publishers alone.

Real embedded workers and real publisher processes on the private Redis; what tracking recorded
is read back from Redis through ``TrackingDatabase``.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import group

from merlin_tracking import RunStatus, TrackingDatabase, TrackingError, WorkerStatus
from merlin_tracking.config import ConfigurationError
from merlin_tracking.signals import STUDY_HEADER, WORKSPACE_HEADER, install, launch_study
from merlin_tracking.signals.registry import tracker_for
from merlin_tracking.signals.worker import TrackingStep
from tests.support.celery import (
    POOLS,
    STALE_AFTER,
    counters,
    define_tasks,
    drop_queues,
    embedded_worker,
    make_app,
    publish_beside_a_tracked_app,
    publish_from_new_process,
    queue_name,
    wait_for,
    wait_for_run,
    worker_name,
)


@pytest.fixture(autouse=True)
def _drop_test_queues(raw_redis: redis.Redis, prefix: str) -> Iterator[None]:
    yield
    # Result objects left in reference cycles unsubscribe when collected: do it while the
    # session Redis is still up.
    gc.collect()
    drop_queues(raw_redis, prefix)


def run_headers(study: str, workspace: str) -> dict[str, str]:
    return {STUDY_HEADER: study, WORKSPACE_HEADER: workspace}


# ------------------------------------------------------------------------------- worker records
@pytest.mark.parametrize("pool", POOLS)
def test_worker_records_follow_the_embedded_worker(
    pool: str, redis_url: str, prefix: str, db: TrackingDatabase
) -> None:
    app = make_app(redis_url, prefix)
    t = define_tasks(app)
    tracker = install(app)
    assert tracker is not None
    # A second install is harmless: same tracker, one bootstep.
    assert install(app) is tracker
    assert tracker_for(app) is tracker
    assert [s for s in app.steps["consumer"] if s is TrackingStep] == [TrackingStep]

    node = worker_name(prefix)
    with embedded_worker(app, pool, prefix) as worker:
        assert sum(isinstance(s, TrackingStep) for s in worker.consumer.steps) == 1
        pw = wait_for(lambda: db.physical_workers.get(node), timeout=10)
        lw = db.logical_workers.get(worker_name=node.split("@")[0], queues=[queue_name(prefix)])
        assert pw.status is WorkerStatus.RUNNING
        assert pw.pid == os.getpid()
        assert pw.host == socket.gethostname()
        assert pw.logical_worker_id == lw.id
        assert pw.stale_after == STALE_AFTER
        assert pw.args.get("queues") == [queue_name(prefix)]
        assert pw.id in db.logical_workers.get(lw.id).physical_workers
        # Heartbeats move the timestamp (every tracking_heartbeat_interval = 0.5 s).
        first = pw.heartbeat_timestamp
        assert first is not None
        assert wait_for(
            lambda: (db.physical_workers.get(node).heartbeat_timestamp or first) > first,
            timeout=5,
        )
        # Installing twice does not double the hooks: one retry is counted once.
        run = launch_study(app, "records", "/ws/records", t.flaky.s(1))
        wait_for_run(db, run.id, counters(1, retried=1), RunStatus.COMPLETED, timeout=15)
        assert db.runs.get(run.id).workers == (lw.id,)
        assert run.id in db.logical_workers.get(lw.id).runs
    stopped = db.physical_workers.get(node)
    assert stopped.status is WorkerStatus.STOPPED
    assert stopped.pid is None
    assert db.runs.get(run.id).counters == counters(1, retried=1)

    # The same node started again is a restart of the same record.
    with embedded_worker(app, pool, prefix):
        assert wait_for(
            lambda: db.physical_workers.get(node).status is WorkerStatus.RUNNING, timeout=10
        )
        again = db.physical_workers.get(node)
        assert again.id == pw.id
        assert again.pid == os.getpid()
        assert again.restart_count == 1
    final = db.physical_workers.get(node)
    assert (final.status, final.pid) == (WorkerStatus.STOPPED, None)
    assert len(db.physical_workers.get_all()) == 1


def test_solo_worker_busy_with_a_long_task_stays_running(
    redis_url: str, prefix: str, db: TrackingDatabase
) -> None:
    """The solo pool runs tasks in the event loop; the worker must not read as STALLED."""
    app = make_app(redis_url, prefix)
    t = define_tasks(app)
    install(app)
    node = worker_name(prefix)
    with embedded_worker(app, "solo", prefix):
        wait_for(lambda: db.physical_workers.get(node), timeout=10)
        result = t.nap.delay(STALE_AFTER * 1.75)
        statuses = []
        while not result.ready():
            statuses.append(db.physical_workers.get(node).status)
            time.sleep(0.1)
        assert result.get(timeout=10) == STALE_AFTER * 1.75
    assert len(statuses) > 10
    assert set(statuses) == {WorkerStatus.RUNNING}


def test_worker_started_after_the_run_attaches_to_it(
    redis_url: str, prefix: str, db: TrackingDatabase
) -> None:
    app = make_app(redis_url, prefix)
    t = define_tasks(app)
    install(app)
    run = launch_study(app, "late", "/ws/late", group(t.add.s(i, i) for i in range(3)))
    assert run.status is RunStatus.STALLED  # no live worker consumes its queue yet
    assert run.workers == ()
    with embedded_worker(app, "solo", prefix):
        wait_for_run(db, run.id, counters(3), RunStatus.COMPLETED, timeout=15)
    lw = db.logical_workers.get(
        worker_name=worker_name(prefix).split("@")[0], queues=[queue_name(prefix)]
    )
    assert db.runs.get(run.id).workers == (lw.id,)


# ------------------------------------------------------------------------------- switched off
@pytest.mark.parametrize("how", ["env", "conf"])
def test_tracking_switched_off_records_nothing(
    how: str,
    redis_url: str,
    prefix: str,
    db: TrackingDatabase,
    raw_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf: dict[str, Any] = {}
    if how == "env":
        monkeypatch.setenv("MERLIN_TRACKING", "0")
    else:
        conf["tracking_enabled"] = False
    app = make_app(redis_url, prefix, **conf)
    t = define_tasks(app)
    assert install(app) is None
    assert TrackingStep not in app.steps["consumer"]
    with pytest.raises(TrackingError, match="disabled"):
        launch_study(app, "off", "/ws/off", t.noop.s())
    with embedded_worker(app, "solo", prefix):
        results = [
            t.flaky.apply_async((1,), headers=run_headers("off", "/ws/off")) for _ in range(3)
        ]
        assert [r.get(timeout=15) for r in results] == [1, 1, 1]
    assert db.runs.get_all() == []
    assert db.studies.get_all() == []
    assert db.physical_workers.get_all() == []
    assert db.logical_workers.get_all() == []
    assert list(raw_redis.scan_iter(match="*" + prefix + "}*")) == []


def test_untracked_app_beside_a_tracked_app_records_nothing(
    redis_url: str, prefix: str, db: TrackingDatabase
) -> None:
    """``tracking_enabled = False`` on one app holds when another app of the process is tracked.

    Run in a fresh process, so that the tracked app is the process's only tracker.
    """
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=publish_beside_a_tracked_app, args=(redis_url, prefix, f"{prefix}_quiet")
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    quiet_db = TrackingDatabase.from_url(redis_url, prefix=f"{prefix}_quiet")
    assert quiet_db.runs.get_all() == []
    assert db.runs.get_all() == [], "the untracked app's messages were tracked by the other app"


# ------------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"tracking_heartbeat_interval": "abc"}, "tracking_heartbeat_interval"),
        ({"tracking_heartbeat_interval": -1}, "tracking_heartbeat_interval"),
        ({"tracking_stale_after": "soon"}, "tracking_stale_after"),
        ({"tracking_heartbeat_interval": 5, "tracking_stale_after": 2}, "tracking_stale_after"),
        ({"tracking_heartbeat_interval": 2, "tracking_stale_after": 2}, "tracking_stale_after"),
        ({"tracking_url": "http://127.0.0.1:6379/0"}, "tracking_url"),
        ({"tracking_enabled": "maybe"}, "tracking_enabled"),
    ],
)
def test_bad_setting_fails_at_install_naming_it(
    settings: dict[str, Any], named: str, redis_url: str, prefix: str
) -> None:
    app = make_app(redis_url, prefix, **settings)
    with pytest.raises(ConfigurationError, match=named):
        install(app)
    assert tracker_for(app) is None
    assert TrackingStep not in app.steps["consumer"]


# ------------------------------------------------------------------------------- publishers
def test_publishers_in_eight_processes_create_exactly_one_run(
    redis_url: str, prefix: str, db: TrackingDatabase
) -> None:
    """Only message headers name the run; all processes publish its first task at once."""
    processes, per_process = 8, 25
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    workers = [
        ctx.Process(
            target=publish_from_new_process,
            args=(redis_url, prefix, "crowd", "/ws/crowd", per_process, barrier),
        )
        for _ in range(processes)
    ]
    for proc in workers:
        proc.start()
    for proc in workers:
        proc.join(120)
    assert [proc.exitcode for proc in workers] == [0] * processes
    runs = db.runs.get_all()
    assert len(runs) == 1
    run = runs[0]
    assert run.workspace == "/ws/crowd"
    assert run.study_id == db.studies.get("crowd").id
    assert run.tasks_queued == processes * per_process
    assert run.counters == counters(processes * per_process, started=0, succeeded=0)
    assert run.queues == (queue_name(prefix),)
    assert run.status is RunStatus.STALLED  # queued where no live worker consumes
    assert len(db.studies.get_all()) == 1
