"""``install(app)``: wire tracking into one Celery app (safe to call more than once)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, signals

from merlin_tracking.config import TrackingConfig
from merlin_tracking.resolvers import load_resolver
from merlin_tracking.signals import publish, registry, tasks
from merlin_tracking.signals.tracker import Tracker
from merlin_tracking.signals.worker import TrackingStep

logger = logging.getLogger("merlin_tracking")

_connect_lock = threading.Lock()
_connected = False


def _connect_signals() -> None:
    """Connect the receivers once per process; they look up the app's tracker themselves."""
    global _connected
    with _connect_lock:
        if _connected:
            return
        uid = "merlin_tracking"
        signals.before_task_publish.connect(
            publish.on_before_task_publish, weak=False, dispatch_uid=uid
        )
        signals.task_prerun.connect(tasks.on_task_prerun, weak=False, dispatch_uid=uid)
        signals.task_success.connect(tasks.on_task_success, weak=False, dispatch_uid=uid)
        signals.task_failure.connect(tasks.on_task_failure, weak=False, dispatch_uid=uid)
        signals.task_retry.connect(tasks.on_task_retry, weak=False, dispatch_uid=uid)
        signals.task_revoked.connect(tasks.on_task_revoked, weak=False, dispatch_uid=uid)
        signals.task_received.connect(tasks.on_task_received, weak=False, dispatch_uid=uid)
        signals.worker_process_shutdown.connect(_flush_on_exit, weak=False, dispatch_uid=uid)
        _connected = True


def _flush_on_exit(**_: Any) -> None:
    tracker = registry.active_tracker()
    if tracker is not None:
        tracker.flush(5.0)


def install(app: Celery) -> Tracker | None:
    """Track ``app``'s runs and workers; returns its tracker, or None when tracking is off.

    Reads ``tracking_*`` settings from ``app.conf`` and loads the run resolver they name (bad
    values raise ``ConfigurationError`` naming the setting), then adds the worker bootstep. A
    second call returns the same tracker.
    """
    existing = registry.tracker_for(app)
    if existing is not None:
        return existing
    config = TrackingConfig.from_app_conf(app.conf)
    if not config.enabled:
        registry.register_disabled(app)
        return None
    resolver = load_resolver(config.run_resolver)
    tracker = registry.register(app, Tracker(config, app_name=app.main, resolver=resolver))
    _connect_signals()
    app.steps["consumer"].add(TrackingStep)
    return tracker
