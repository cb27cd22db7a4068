"""Tracking store outages never hurt the tasks, and the counters converge afterwards.

The tracking store is a redis-server of this test (``tracking_url``); broker and result backend
stay on the session Redis. Stopping the tracking server while tasks run must not fail or slow
any task; once it is back on the same port the buffered updates make the counters exact, and
the "unavailable" warning is logged once per outage, not once per task.
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Iterator

import pytest
import redis
from celery import group
from celery.result import AsyncResult

from merlin_tracking import RunStatus, StoreUnavailableError, TrackingDatabase, WorkerStatus
from merlin_tracking.signals import install, launch_study
from tests.support.celery import (
    captured_logs,
    counters,
    define_tasks,
    drop_queues,
    embedded_worker,
    make_app,
    wait_for,
    wait_for_run,
    worker_name,
)
from tests.support.redis_server import RedisServer

OUTAGE_WARNING = "tracking updates are buffered"
BACK_MESSAGE = "store reachable again"


@pytest.fixture
def tracking_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _cleanup(raw_redis: redis.Redis, prefix: str) -> Iterator[None]:
    yield
    gc.collect()
    drop_queues(raw_redis, prefix)


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_tasks_survive_tracking_outages_and_counters_converge(
    pool: str, redis_url: str, prefix: str, tracking_server: RedisServer
) -> None:
    """Two outages in a row. The log is checked with the threads pool, where one process (one
    buffer) reports everything; prefork children each buffer (and warn) on their own."""
    one_process = pool == "threads"
    app = make_app(redis_url, prefix, tracking_url=tracking_server.url)
    t = define_tasks(app)
    assert install(app) is not None
    tdb = TrackingDatabase.from_url(tracking_server.url, prefix=prefix)
    node = worker_name(prefix)
    per_run = 16
    with captured_logs() as logs, embedded_worker(app, pool, prefix, concurrency=2):
        assert wait_for(lambda: tdb.physical_workers.get(node), timeout=10)
        for outage in (1, 2):
            sigs = [t.nap.s(0.2) for _ in range(per_run)]
            ids = [sig.freeze().id for sig in sigs]
            run = launch_study(app, "outage", f"/ws/outage-{outage}", group(sigs))
            assert wait_for(lambda: tdb.runs.get(run.id).tasks_started >= 1, timeout=15)  # noqa: B023

            tracking_server.stop()
            # Tasks keep running and their results come back while tracking is down.
            results = [AsyncResult(task_id, app=app).get(timeout=30) for task_id in ids]
            assert results == [0.2] * per_run
            if one_process:
                assert wait_for(lambda: len(logs.messages(OUTAGE_WARNING)) >= outage, timeout=5)  # noqa: B023
                assert len(logs.messages(OUTAGE_WARNING)) == outage

            tracking_server.start()
            final = wait_for_run(tdb, run.id, counters(per_run), RunStatus.COMPLETED, timeout=30)
            assert final.counters == counters(per_run)
            assert final.status is RunStatus.COMPLETED
            # The worker reads as alive again once its heartbeat reaches the store.
            assert wait_for(
                lambda: tdb.physical_workers.get(node).status is WorkerStatus.RUNNING, timeout=10
            )
            if one_process:
                # One warning per outage (not one per task), and one "back" message.
                assert len(logs.messages(OUTAGE_WARNING)) == outage
                assert wait_for(lambda: len(logs.messages(BACK_MESSAGE)) == outage, timeout=5)  # noqa: B023
    stopped = tdb.physical_workers.get(node)
    assert (stopped.status, stopped.pid) == (WorkerStatus.STOPPED, None)
    assert [r.counters for r in tdb.runs.get_all()] == [counters(per_run)] * 2


def test_outage_warning_can_cross_a_process_boundary(tracking_server: RedisServer) -> None:
    """Prefork children log the outage with the StoreUnavailableError as a record argument.

    Log records that leave a pool child (start_worker's QueueListener, any QueueHandler
    set-up) are pickled; the exception must come back in one piece. Observed with the prefork
    outage test above: ``TypeError: StoreUnavailableError.__init__() missing 1 required
    positional argument: 'reason'`` in the log listener thread, which then dies.
    """
    tracking_server.stop()
    tdb = TrackingDatabase.from_url(tracking_server.url, prefix="unreachable")
    with pytest.raises(StoreUnavailableError) as caught:
        tdb.runs.get_all()
    error = caught.value
    copy = pickle.loads(pickle.dumps(error))  # what a multiprocessing queue does with args
    assert type(copy) is StoreUnavailableError
    assert str(copy) == str(error)
