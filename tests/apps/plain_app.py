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
    PLAIN_APP_VISIBILITY_TIMEOUT  Redis broker: seconds before an unacknowledged message is
                                  delivered again (restored every second), and
    PLAIN_APP_BROKER_KEYPREFIX    a key prefix for the broker's own keys, when set
"""

from __future__ import annotations

import ctypes
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
if "PLAIN_APP_VISIBILITY_TIMEOUT" in os.environ:
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["PLAIN_APP_VISIBILITY_TIMEOUT"]),
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "global_keyprefix": os.environ.get("PLAIN_APP_BROKER_KEYPREFIX", ""),
    }


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


@app.task(name="plain_app.careful_sleeper", acks_late=True, reject_on_worker_lost=True)
def careful_sleeper(seconds: float) -> float:
    """``sleeper``, acknowledged only once done: a worker lost meanwhile hands it back."""
    time.sleep(float(seconds))
    return float(seconds)


@app.task(name="plain_app.hold_gil")
def hold_gil(seconds: float) -> float:
    """Stay ``seconds`` (whole) in one C call that keeps the interpreter lock, as a long
    numeric kernel does: ``ctypes.PyDLL`` calls do not release it, so no other thread of the
    process runs meanwhile."""
    libc = ctypes.PyDLL(None)
    libc.sleep(int(seconds))
    return float(int(seconds))
