"""Worker side: task lifecycle signals become task events of the task's run.

Each receiver reads the run headers from the task request and queues one event; it never
raises and never waits on Redis (see ``buffer``). Under prefork these run in the pool child,
where the tracker opens its own connection lazily.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from merlin_tracking.records.events import TaskEventKind
from merlin_tracking.signals.publish import run_of_request
from merlin_tracking.signals.state import active_tracker

logger = logging.getLogger("merlin_tracking")


def _report(request: Any, task_id: Any, kind: TaskEventKind) -> None:
    try:
        tracker = active_tracker()
        run = run_of_request(request)
        if tracker is None or run is None:
            return
        identifier = task_id or getattr(request, "id", None)
        if isinstance(identifier, str):
            tracker.record(run, identifier, kind)
    except Exception:
        logger.exception("merlin_tracking: %s hook failed (task unaffected)", kind.value)


def on_task_prerun(sender: Any = None, task_id: Any = None, task: Any = None, **_: Any) -> None:
    _report(getattr(task, "request", None), task_id, TaskEventKind.STARTED)


def on_task_success(sender: Any = None, **_: Any) -> None:
    _report(getattr(sender, "request", None), None, TaskEventKind.SUCCEEDED)


def on_task_failure(sender: Any = None, task_id: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    if run_of_request(request) is None and isinstance(task_id, str):
        # Sent by the worker's main process (hard time limit, lost pool process, Reject):
        # there is no task context there, so use what task_received saw.
        request = _received.get(task_id)
    _report(request, task_id, TaskEventKind.FAILED)


def on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Main process: remember each tracked task's headers for failures reported there."""
    try:
        headers = _RequestHeaders(request)
        if run_of_request(headers) is not None and isinstance(headers.id, str):
            _received.put(headers.id, headers)
    except Exception:
        logger.exception("merlin_tracking: task_received hook failed (task unaffected)")


def on_task_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    _report(request, None, TaskEventKind.RETRIED)


def on_task_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    # Celery passes the task's Context (headers are attributes); a worker Request object keeps
    # them in ``request_dict``; failing both, use what task_received saw.
    task_id = getattr(request, "id", None)
    if run_of_request(request) is None:
        headers = _RequestHeaders(request)
        request = headers if run_of_request(headers) else _received.get(str(task_id))
    _report(request, task_id, TaskEventKind.REVOKED)


class _Recent:
    """A small LRU map of task id -> request headers (bounded: entries are never needed long)."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            if len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def get(self, key: str) -> Any:
        with self._lock:
            return self._items.get(key)


_received = _Recent()


class _RequestHeaders:
    """Attribute view of a worker Request's message headers, like a task's ``request``."""

    def __init__(self, request: Any) -> None:
        self._headers = getattr(request, "request_dict", None) or {}
        self.id = getattr(request, "id", None)

    def __getattr__(self, name: str) -> Any:
        return self._headers.get(name)
