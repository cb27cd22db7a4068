"""Helpers for the tests that run real Celery workers in the test process.

Every test builds its own Celery app on the session's private Redis (broker, result backend and
tracking store), with its own tracking prefix and its own default queue, so messages left over by
another test are never consumed. Workers are ``celery.contrib.testing.worker.start_worker``
workers (solo, threads or prefork pool); what the hooks recorded is read back from Redis.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from celery import Celery, Task
from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController

from merlin_tracking import Run, RunStatus, TrackingDatabase

T = TypeVar("T")

POOLS = ("solo", "threads", "prefork")
CONCURRENCY = {"solo": 1, "threads": 4, "prefork": 2}
HEARTBEAT = 0.5
STALE_AFTER = 2.0
# Settle delay of runs counted at workers: short, so that those runs complete quickly.
SETTLE = 0.5


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; return it, or the last falsy value.

    Exceptions raised by the predicate count as "not yet" until the timeout, then propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            if time.monotonic() > deadline:
                raise
        else:
            if value or time.monotonic() > deadline:
                return value
        time.sleep(interval)


def queue_name(prefix: str) -> str:
    return f"q_{prefix}"


def worker_name(prefix: str) -> str:
    """Node name of the test's embedded worker; its logical worker is ``w_<prefix>``."""
    return f"w_{prefix}@testhost"


def make_app(redis_url: str, prefix: str, **conf: Any) -> Celery:
    """A Celery app of its own for one test (not yet tracked: call ``install``)."""
    app = Celery(f"t_{prefix}", broker=redis_url, backend=redis_url)
    settings: dict[str, Any] = {
        "tracking_prefix": prefix,
        "tracking_heartbeat_interval": HEARTBEAT,
        "tracking_stale_after": STALE_AFTER,
        "tracking_settle_seconds": SETTLE,
        "task_default_queue": queue_name(prefix),
        "result_expires": 600,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_prefetch_multiplier": 4,
    }
    settings.update(conf)
    app.conf.update(settings)
    return app


@dataclass
class Tasks:
    """The tasks of one test app."""

    noop: Task
    add: Task
    tsum: Task
    nap: Task
    boom: Task
    flaky: Task
    replacer: Task
    expand: Task


def define_tasks(app: Celery) -> Tasks:
    """Register the test tasks on ``app`` (explicit names: other processes publish them too)."""

    @app.task(shared=False, name="mt.noop")
    def noop(*args: Any, **kwargs: Any) -> None:
        return None

    @app.task(shared=False, name="mt.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(shared=False, name="mt.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(shared=False, name="mt.nap")
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(shared=False, name="mt.boom")
    def boom() -> None:
        raise ValueError("boom (expected by the test)")

    @app.task(shared=False, bind=True, name="mt.flaky", max_retries=5)
    def flaky(self: Task, times: int) -> int:
        if self.request.retries < times:
            raise self.retry(countdown=0)
        return int(self.request.retries)

    @app.task(shared=False, bind=True, name="mt.replacer")
    def replacer(self: Task, x: int) -> None:
        raise self.replace(add.si(x, 1))

    @app.task(shared=False, name="mt.expand")
    def expand(width: int, depth: int, seconds: float) -> int:
        """Publish ``width`` subtasks with ``.delay()``; the leaves nap ``seconds``."""
        for _ in range(width):
            if depth > 1:
                expand.delay(width, depth - 1, seconds)
            else:
                nap.delay(seconds)
        return width

    return Tasks(noop, add, tsum, nap, boom, flaky, replacer, expand)


@contextlib.contextmanager
def embedded_worker(app: Celery, pool: str, prefix: str, **kwargs: Any) -> Iterator[WorkController]:
    """A real worker in this process, named ``w_<prefix>@testhost``."""
    options: dict[str, Any] = {
        "concurrency": CONCURRENCY[pool],
        "perform_ping_check": False,
        "hostname": worker_name(prefix),
        "shutdown_timeout": 30.0,
    }
    options.update(kwargs)
    with start_worker(app, pool=pool, **options) as worker:
        yield worker


def drop_queues(client: redis.Redis, prefix: str) -> None:
    """Remove the broker keys of this test's queues (messages nobody will consume)."""
    for key in client.scan_iter(match=f"*q*_{prefix}*", count=1000):
        client.delete(key)


def run_state(db: TrackingDatabase, run_id: str) -> Run:
    return db.runs.get(run_id)


def wait_for_run(
    db: TrackingDatabase,
    run_id: str,
    counters: dict[str, int],
    status: RunStatus | None = None,
    timeout: float = 30.0,
) -> Run:
    """Poll the run until its counters (and status) are the expected ones; return it."""

    def reached() -> Run | None:
        run = db.runs.get(run_id)
        if run.counters == counters and (status is None or run.status is status):
            return run
        return None

    wait_for(reached, timeout)
    return db.runs.get(run_id)


def counters(
    queued: int,
    started: int | None = None,
    succeeded: int | None = None,
    failed: int = 0,
    retried: int = 0,
    revoked: int = 0,
    lost: int = 0,
) -> dict[str, int]:
    """Expected counters; ``started`` and ``succeeded`` default to ``queued``."""
    return {
        "queued": queued,
        "started": queued if started is None else started,
        "succeeded": queued if succeeded is None else succeeded,
        "failed": failed,
        "retried": retried,
        "revoked": revoked,
        "lost": lost,
    }


class ListHandler(logging.Handler):
    """Keeps the records of one logger (Celery's worker setup replaces the root handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, contains: str) -> list[str]:
        return [r.getMessage() for r in self.records if contains in r.getMessage()]


@contextlib.contextmanager
def captured_logs(name: str = "merlin_tracking") -> Iterator[ListHandler]:
    logger = logging.getLogger(name)
    handler = ListHandler()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def publish_from_new_process(
    redis_url: str,
    prefix: str,
    study: str,
    workspace: str,
    count: int,
    barrier: Any,
) -> None:
    """Body of a spawned process: build the app, install tracking, publish ``count`` tasks.

    Only message headers name the run (no ``launch_study``); the process then exits normally.
    """
    from merlin_tracking.signals import STUDY_HEADER, WORKSPACE_HEADER, install

    app = make_app(redis_url, prefix)
    tasks = define_tasks(app)
    install(app)
    headers = {STUDY_HEADER: study, WORKSPACE_HEADER: workspace}
    barrier.wait(60)
    for _ in range(count):
        tasks.noop.apply_async(headers=headers)


def publish_beside_a_tracked_app(redis_url: str, tracked_prefix: str, quiet_prefix: str) -> None:
    """Body of a spawned process with two apps: one tracked, one with tracking switched off.

    The untracked app publishes a message carrying run headers.
    """
    from merlin_tracking.signals import STUDY_HEADER, WORKSPACE_HEADER, install

    tracked = make_app(redis_url, tracked_prefix)
    define_tasks(tracked)
    assert install(tracked) is not None
    quiet = make_app(redis_url, quiet_prefix, tracking_enabled=False)
    tasks = define_tasks(quiet)
    assert install(quiet) is None
    quiet.set_current()
    headers = {STUDY_HEADER: "quiet", WORKSPACE_HEADER: "/ws/quiet"}
    for _ in range(3):
        tasks.noop.apply_async(headers=headers)
