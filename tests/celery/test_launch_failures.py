"""A launch whose publish fails leaves no run waiting INITIALIZED forever.

Real brokers only: a Redis URL where nothing listens, and the test's Redis with a message that
cannot be encoded (the first task of the group went out, the second raised).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import redis
from celery import group
from kombu.exceptions import EncodeError, OperationalError

from merlin_tracking import RunStatus, TrackingDatabase
from merlin_tracking.signals import install, launch_study
from tests.support.celery import define_tasks, drop_queues, make_app
from tests.support.redis_server import free_port


@pytest.fixture(autouse=True)
def _drop_leftovers(prefix: str, raw_redis: redis.Redis) -> Iterator[None]:
    yield
    gc.collect()
    drop_queues(raw_redis, prefix)


def test_unreachable_broker_removes_the_new_run_and_a_retry_starts_afresh(
    redis_url: str, prefix: str, redis_db: TrackingDatabase
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(redis_url, prefix, broker_url=dead, tracking_url=redis_url)
    app.conf.task_publish_retry = False
    tasks = define_tasks(app)
    assert install(app) is not None

    with pytest.raises(OperationalError):
        launch_study(app, "sweep", "/ws/failed-launch", tasks.add.s(1, 2))
    assert redis_db.runs.get_all() == []  # no INITIALIZED run left behind

    retry = make_app(redis_url, prefix, tracking_url=redis_url)
    retry_tasks = define_tasks(retry)
    assert install(retry) is not None
    run = launch_study(retry, "sweep", "/ws/failed-launch", retry_tasks.add.s(1, 2))
    assert run.tasks_queued == 1 and run.publishing == 0
    assert run.status is RunStatus.STALLED  # no worker consumes its queue in this test
    assert [r.id for r in redis_db.runs.get_all()] == [run.id]


def test_publish_failing_midway_fails_the_run_with_the_reason(
    redis_url: str, prefix: str, redis_db: TrackingDatabase
) -> None:
    app = make_app(redis_url, prefix)
    tasks = define_tasks(app)
    assert install(app) is not None
    unencodable = tasks.add.s(object(), 1)  # JSON cannot carry it: the publish raises

    with pytest.raises(EncodeError):
        launch_study(app, "sweep", "/ws/half-launched", group(tasks.add.s(1, 1), unencodable))
    (run,) = redis_db.runs.get_all()
    assert run.workspace == "/ws/half-launched"
    assert run.status is RunStatus.FAILED and run.publishing == 0
    assert run.tasks_queued >= 1  # the first message went out: it may still run
    assert run.additional_data["launch_error"].startswith("publishing failed: EncodeError")
