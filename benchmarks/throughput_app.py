"""Celery app of the throughput benchmark (``benchmarks/bench_throughput.py``).

A plain Celery project without a line of merlin_tracking code: ``celery -A throughput_app
worker`` is tracked through the package's ``celery.commands`` entry point (the drop-in path), or
not at all when ``BENCH_TRACKING=0`` (which sets ``tracking_enabled = False``; the benchmark also
sets ``MERLIN_TRACKING=0`` then). In the benchmark's resolver mode the publisher runs with
``BENCH_TRACKING=0`` and the worker with ``MERLIN_TRACKING_RUN_RESOLVER=workflow``, so the worker
finds the run of each message itself. Configured from the environment:

    BENCH_REDIS_URL   broker, result backend and (by default) tracking store
    BENCH_QUEUE       queue the tasks go to and the worker consumes
    BENCH_TASKS       how many tasks one measurement runs (the last one stamps its end time)
    BENCH_TRACKING    ``1`` (default) or ``0``

``noop`` does nothing but count itself with one ``INCR`` (the same in both modes), so the
benchmark can tell when every task is done without storing results; the first task stamps when it
started and the task that brings the count to ``BENCH_TASKS`` stamps when it ended.

``python throughput_app.py publish STUDY WORKSPACE`` publishes ``BENCH_TASKS`` no-op tasks as one
group (with ``launch_study`` when tracking is on, else with a plain ``apply_async``) and prints a
JSON line with the timing, the run id (tracking on) or the group id (tracking off).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import redis
from celery import Celery, group

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
TASKS = int(os.environ.get("BENCH_TASKS", "5000"))
TRACKING = os.environ.get("BENCH_TRACKING", "1") != "0"

DONE_KEY = "bench:done"
FIRST_KEY = "bench:first_started"
LAST_KEY = "bench:last_finished"

app = Celery("throughput_app")
app.conf.update(
    broker_url=REDIS_URL,
    result_backend=REDIS_URL,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    tracking_enabled=TRACKING,
)

_clients: dict[int, redis.Redis] = {}


def _client() -> redis.Redis:
    """One connection per process (prefork children get their own after the fork)."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        client = _clients[pid] = redis.Redis.from_url(REDIS_URL)
    return client


def _noop() -> None:
    """Count this task; the first and the last one stamp the time (a few microseconds)."""
    started = time.time()
    client = _client()
    done = int(client.incr(DONE_KEY))
    if done == 1:
        client.set(FIRST_KEY, repr(started))
    if done == TASKS:
        client.set(LAST_KEY, repr(time.time()))


noop: Any = app.task(name="bench.noop", ignore_result=True)(_noop)


def publish(study: str, workspace: str) -> dict[str, object]:
    """Publish ``TASKS`` no-op tasks as one group; returns seconds taken, and the run id
    (tracking on) or the group id (tracking off: a worker-side resolver keys the run by it)."""
    canvas = group(noop.s() for _ in range(TASKS))
    with app.connection_for_write() as connection:
        connection.ensure_connection()
    run_id = group_id = None
    started = time.perf_counter()
    if TRACKING:
        from merlin_tracking.signals import launch_study

        run_id = launch_study(app, study, workspace, canvas).id
    else:
        group_id = canvas.apply_async().id
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "run_id": run_id, "group_id": group_id, "tasks": TASKS}


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "publish":
        sys.exit("usage: throughput_app.py publish STUDY WORKSPACE")
    print(json.dumps(publish(sys.argv[2], sys.argv[3])), flush=True)
