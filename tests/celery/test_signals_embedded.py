"""Automatic run tracking with real in-process workers on the private Redis.

Each test builds its own app (own tracking prefix, own default queue), installs tracking, runs
an embedded worker (``celery.contrib.testing.worker.start_worker``) with the solo, threads or
prefork pool, and reads what the hooks recorded back from Redis through ``TrackingDatabase``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery, chain, chord, group
from celery.result import AsyncResult

from merlin_tracking import Run, RunStatus, TrackingDatabase
from merlin_tracking.signals import install, launch_study, study_launched
from tests.support.celery import (
    POOLS,
    Tasks,
    counters,
    define_tasks,
    drop_queues,
    embedded_worker,
    make_app,
    queue_name,
    wait_for,
    wait_for_run,
    worker_name,
)

AppFactory = Callable[..., tuple[Celery, Tasks]]


@pytest.fixture
def tracked_app(redis_url: str, prefix: str, raw_redis: redis.Redis) -> Iterator[AppFactory]:
    """Build the test's app (extra settings as keyword arguments), its tasks, and install."""

    def build(**conf: Any) -> tuple[Celery, Tasks]:
        app = make_app(redis_url, prefix, **conf)
        tasks = define_tasks(app)
        assert install(app) is not None
        return app, tasks

    yield build
    # Result objects left in reference cycles unsubscribe when collected: do it while the
    # session Redis is still up.
    gc.collect()
    drop_queues(raw_redis, prefix)


@pytest.fixture
def launched() -> Iterator[list[Run]]:
    """Runs announced through the ``study_launched`` signal during the test."""
    runs: list[Run] = []

    def receiver(sender: Any = None, run: Run | None = None, **_: Any) -> None:
        assert isinstance(sender, Celery)
        assert run is not None
        runs.append(run)

    study_launched.connect(receiver, weak=False)
    yield runs
    study_launched.disconnect(receiver)


def logical_worker_id(db: TrackingDatabase, prefix: str) -> str:
    worker = db.logical_workers.get(
        worker_name=worker_name(prefix).split("@")[0], queues=[queue_name(prefix)]
    )
    return worker.id


# ------------------------------------------------------------------------------- canvases
@pytest.mark.parametrize("pool", POOLS)
def test_chain_group_and_chord_runs_complete_with_exact_counters(
    pool: str,
    tracked_app: AppFactory,
    db: TrackingDatabase,
    prefix: str,
    launched: list[Run],
) -> None:
    app, t = tracked_app()
    canvases = {
        "/ws/chain": (chain(t.add.s(1, 1), t.add.s(2), t.add.s(3)), 3),
        "/ws/group": (group(t.add.s(i, i) for i in range(5)), 5),
        "/ws/chord": (chord([t.add.s(i, i) for i in range(20)], t.tsum.s()), 21),
    }
    with embedded_worker(app, pool, prefix):
        runs = {ws: launch_study(app, "canvas", ws, sig) for ws, (sig, _) in canvases.items()}
        finals = {
            ws: wait_for_run(db, runs[ws].id, counters(n), RunStatus.COMPLETED)
            for ws, (_, n) in canvases.items()
        }
        lw_id = logical_worker_id(db, prefix)
    for ws, (_, n) in canvases.items():
        final = db.runs.get(runs[ws].id)
        assert final.counters == counters(n), ws
        assert final.status is RunStatus.COMPLETED, ws
        assert final.queues == (queue_name(prefix),)
        assert lw_id in final.workers
        assert finals[ws].counters == counters(n), ws
    assert [r.id for r in launched] == [runs[ws].id for ws in canvases]
    assert [r.workspace for r in launched] == list(canvases)
    assert all(r.study_id == db.studies.get("canvas").id for r in launched)
    assert len(db.runs.get_all()) == 3


def test_task_records_follow_the_work_and_retention_drops_them(
    tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    """Each task of a run has a record naming its task, queue and worker; with
    ``tracking_task_retention = 0`` a completed run keeps only its counters."""
    app, t = tracked_app()
    kept_app, kept_t = tracked_app(tracking_task_retention=0)
    with embedded_worker(app, "threads", prefix):
        run = launch_study(app, "records", "/ws/records", group(t.add.s(i, i) for i in range(3)))
        wait_for_run(db, run.id, counters(3), RunStatus.COMPLETED)
        tasks = db.tasks.get_all({"run_id": run.id})
        assert {(task.name, task.queue, task.worker, task.state.value) for task in tasks} == {
            ("mt.add", queue_name(prefix), worker_name(prefix), "SUCCEEDED")
        }
        assert len(tasks) == 3 and all(task.attempts == 1 for task in tasks)
        kept_app.set_current()
        dropped = launch_study(
            kept_app, "records", "/ws/dropped", group(kept_t.add.s(i, i) for i in range(3))
        )
        assert dropped.task_retention == 0
        wait_for_run(db, dropped.id, counters(3), RunStatus.COMPLETED)
    assert db.tasks.get_all({"run_id": dropped.id}) == []
    assert db.runs.get(dropped.id).counters == counters(3)


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_chord_of_a_thousand_tasks(
    pool: str, tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    app, t = tracked_app()
    sig = chord([t.add.s(i, 1) for i in range(1000)], t.tsum.s())
    with embedded_worker(app, pool, prefix):
        run = launch_study(app, "big", "/ws/big", sig)
        assert run.tasks_queued >= 1000  # the header is counted before launch_study returns
        wait_for_run(db, run.id, counters(1001), RunStatus.COMPLETED, timeout=90)
    final = db.runs.get(run.id)
    assert final.counters == counters(1001)
    assert final.status is RunStatus.COMPLETED


# ------------------------------------------------------------------------------- retries etc.
@pytest.mark.parametrize("pool", POOLS)
def test_task_retried_twice_counts_once_and_completes(
    pool: str, tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    app, t = tracked_app()
    with embedded_worker(app, pool, prefix):
        run = launch_study(app, "retry", "/ws/retry", t.flaky.s(2))
        wait_for_run(db, run.id, counters(1, retried=2), RunStatus.COMPLETED)
    final = db.runs.get(run.id)
    assert final.counters == counters(1, retried=2)
    assert final.status is RunStatus.COMPLETED


@pytest.mark.parametrize("pool", POOLS)
def test_replaced_task_counts_once(
    pool: str, tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    app, t = tracked_app()
    sig = chain(t.replacer.si(41), t.noop.si())
    with embedded_worker(app, pool, prefix):
        run = launch_study(app, "replace", "/ws/replace", sig)
        wait_for_run(db, run.id, counters(2), RunStatus.COMPLETED)
    final = db.runs.get(run.id)
    assert final.counters == counters(2)
    assert final.status is RunStatus.COMPLETED


@pytest.mark.parametrize("pool", POOLS)
def test_subtasks_published_from_a_task_belong_to_its_run(
    pool: str, tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    app, t = tracked_app()
    width, depth = 3, 2  # 1 root + 3 children + 9 naps
    total = 1 + width + width * width
    seen: list[Run] = []

    def watch() -> bool:
        current = db.runs.get(run.id)
        seen.append(current)
        return current.status is RunStatus.COMPLETED

    with embedded_worker(app, pool, prefix):
        run = launch_study(app, "expand", "/ws/expand", t.expand.s(width, depth, 0.1))
        assert wait_for(watch, timeout=30)
        final = wait_for_run(db, run.id, counters(total), RunStatus.COMPLETED)
    assert final.counters == counters(total)
    # Never complete while subtasks were still to run.
    early = [r for r in seen if r.status is RunStatus.COMPLETED and r.tasks_succeeded < total]
    assert early == []
    assert any(r.status is RunStatus.RUNNING for r in seen)
    assert len(db.runs.get_all()) == 1
    assert db.runs.get(run.id).counters == counters(total)


# ------------------------------------------------------------------------------- failures
@pytest.mark.parametrize("pool", POOLS)
def test_failing_task_fails_the_run_and_the_others_still_count(
    pool: str, tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    app, t = tracked_app()
    sig = group([t.add.s(1, 1), t.boom.s(), t.add.s(2, 2), t.nap.s(0.2)])
    expected = counters(4, succeeded=3, failed=1)
    with embedded_worker(app, pool, prefix):
        run = launch_study(app, "fail", "/ws/fail", sig)
        wait_for_run(db, run.id, expected, RunStatus.FAILED)
    final = db.runs.get(run.id)
    assert final.counters == expected
    assert final.status is RunStatus.FAILED


# ------------------------------------------------------------------------------- revokes
@pytest.mark.parametrize("pool", POOLS)
def test_revoke_while_waiting_for_countdown(
    pool: str, tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    """Revoked after the worker received it, before its countdown let it start."""
    app, t = tracked_app()
    later = t.add.s(2, 2).set(countdown=2)
    delayed = later.freeze().id
    sig = group([t.add.s(1, 1), later])
    expected = counters(2, started=1, succeeded=1, revoked=1)
    with embedded_worker(app, pool, prefix):
        run = launch_study(app, "revoke", "/ws/revoke", sig)
        # The delayed message is received (it waits for its ETA inside the worker).
        wait_for(lambda: db.runs.get(run.id).tasks_succeeded == 1, timeout=15)
        app.control.revoke(delayed, destination=[worker_name(prefix)])
        # Celery did revoke it (when its countdown was over) ...
        assert wait_for(lambda: AsyncResult(delayed, app=app).state == "REVOKED", timeout=10)
        # ... and the run counts it as revoked, which completes the run.
        wait_for_run(db, run.id, expected, RunStatus.COMPLETED, timeout=5)
    final = db.runs.get(run.id)
    assert final.counters == expected
    assert final.status is RunStatus.COMPLETED


def test_revoke_before_the_worker_receives_the_task(
    tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    """Published to a queue the worker does not consume yet; revoked; then consumed."""
    app, t = tracked_app()
    later = f"later_q_{prefix}"
    expected = counters(2, started=1, succeeded=1, revoked=1)
    with embedded_worker(app, "solo", prefix) as worker:
        held = t.add.s(2, 2).set(queue=later)
        delayed = held.freeze().id
        sig = group([t.add.s(1, 1), held])
        run = launch_study(app, "revoke", "/ws/revoke-early", sig)
        assert set(db.runs.get(run.id).queues) == {queue_name(prefix), later}
        wait_for(lambda: db.runs.get(run.id).tasks_succeeded == 1, timeout=15)
        replies = app.control.revoke(delayed, destination=[worker_name(prefix)], reply=True)
        assert replies, "the worker did not acknowledge the revoke"
        app.control.add_consumer(later, destination=[worker.hostname], reply=True)
        assert wait_for(lambda: AsyncResult(delayed, app=app).state == "REVOKED", timeout=10)
        wait_for_run(db, run.id, expected, RunStatus.COMPLETED, timeout=5)
    final = db.runs.get(run.id)
    assert final.counters == expected
    assert final.status is RunStatus.COMPLETED


def test_revoke_with_terminate_while_running_on_prefork(
    tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    app, t = tracked_app()
    expected = counters(2, started=2, succeeded=1, revoked=1)
    with embedded_worker(app, "prefork", prefix):
        nap = t.nap.s(60)
        sleeper = nap.freeze().id
        sig = group([nap, t.add.s(1, 2)])
        run = launch_study(app, "terminate", "/ws/terminate", sig)
        assert wait_for(lambda: db.runs.get(run.id).tasks_started == 2, timeout=15)
        app.control.revoke(sleeper, terminate=True, destination=[worker_name(prefix)])
        assert wait_for(lambda: AsyncResult(sleeper, app=app).state == "REVOKED", timeout=10)
        wait_for_run(db, run.id, expected, timeout=5)
    final = db.runs.get(run.id)
    assert final.counters == expected
    assert final.status is not RunStatus.FAILED
    assert final.status is RunStatus.COMPLETED


# ------------------------------------------------------------------------------- cancel
def test_cancelled_run_stays_cancelled_after_its_tasks_finish(
    tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    app, t = tracked_app()
    sig = group(t.nap.s(0.3) for _ in range(6))
    with embedded_worker(app, "threads", prefix, concurrency=2):
        run = launch_study(app, "cancel", "/ws/cancel", sig)
        assert wait_for(lambda: db.runs.get(run.id).tasks_started >= 1, timeout=15)
        assert db.runs.cancel(run.id).status is RunStatus.CANCELLED
        wait_for_run(db, run.id, counters(6), timeout=20)
    final = db.runs.get(run.id)
    assert final.counters == counters(6)
    assert final.status is RunStatus.CANCELLED


# ------------------------------------------------------------------------------- pickle
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_pickle_serialised_messages_are_counted_exactly(
    pool: str, tracked_app: AppFactory, db: TrackingDatabase, prefix: str
) -> None:
    app, t = tracked_app(
        task_serializer="pickle",
        accept_content=["pickle", "json"],
        result_serializer="pickle",
        result_accept_content=["pickle", "json"],
    )
    sig = chain(t.add.s(1, 2), group(t.add.s(i) for i in range(4)), t.tsum.s())
    with embedded_worker(app, pool, prefix):
        run = launch_study(app, "pickle", "/ws/pickle", sig)
        wait_for_run(db, run.id, counters(6, retried=0), RunStatus.COMPLETED)
        retry_run = launch_study(app, "pickle", "/ws/pickle-retry", t.flaky.s(1))
        wait_for_run(db, retry_run.id, counters(1, retried=1), RunStatus.COMPLETED)
    assert db.runs.get(run.id).counters == counters(6)
    assert db.runs.get(retry_run.id).counters == counters(1, retried=1)
