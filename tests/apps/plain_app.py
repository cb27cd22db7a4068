"""A plain Celery project with no merlin_tracking code: the drop-in path must track it anyway.

Everything is configured from environment variables, so each test can point a ``celery worker``
subprocess at its own Redis, key prefix and queue:

    PLAIN_APP_BROKER_URL          broker URL (default: a local Redis)
    PLAIN_APP_RESULT_BACKEND      result backend URL (default: the broker URL)
    PLAIN_APP_QUEUE               default queue (default: ``celery``)
    PLAIN_APP_TRACKING_PREFIX     ``tracking_prefix``, when set
    PLAIN_APP_HEARTBEAT           ``tracking_heartbeat_interval`` in seconds, when set
    PLAIN_APP_STALE_AFTER         ``tracking_stale_after`` in seconds, when set
    PLAIN_APP_TRACKING_ENABLED    ``tracking_enabled`` (``true``/``false``), when set
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

BROKER_URL = os.environ.get("PLAIN_APP_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("plain_app")
app.conf.update(
    broker_url=BROKER_URL,
    result_backend=os.environ.get("PLAIN_APP_RESULT_BACKEND", BROKER_URL),
    task_default_queue=os.environ.get("PLAIN_APP_QUEUE", "celery"),
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=4,
)

_OPTIONAL: dict[str, str] = {
    "PLAIN_APP_TRACKING_PREFIX": "tracking_prefix",
    "PLAIN_APP_HEARTBEAT": "tracking_heartbeat_interval",
    "PLAIN_APP_STALE_AFTER": "tracking_stale_after",
    "PLAIN_APP_TRACKING_ENABLED": "tracking_enabled",
}
_settings: dict[str, Any] = {
    setting: os.environ[variable]
    for variable, setting in _OPTIONAL.items()
    if variable in os.environ
}
app.conf.update(_settings)


@app.task(name="plain_app.noop")
def noop() -> None:
    """Do nothing."""


@app.task(name="plain_app.sleeper")
def sleeper(seconds: float) -> float:
    """Sleep ``seconds`` and return them."""
    time.sleep(float(seconds))
    return float(seconds)


@app.task(name="plain_app.pid")
def pid() -> int:
    """The id of the process that ran the task (a pool child under prefork)."""
    return os.getpid()
