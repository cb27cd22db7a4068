"""Worker side: task lifecycle signals become task events of the task's run.

Each receiver reads the run headers from the task request and queues one event; it never
raises and never waits on Redis (see ``buffer``). Under prefork these run in the pool child,
where the tracker opens its own connection lazily.
"""

from __future__ import annotations

import logging
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
    _report(getattr(sender, "request", None), task_id, TaskEventKind.FAILED)


def on_task_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    _report(request, None, TaskEventKind.RETRIED)


def on_task_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    # ``request`` is the worker's Request object here; its headers are in ``request_dict``.
    _report(_RequestHeaders(request), getattr(request, "id", None), TaskEventKind.REVOKED)


class _RequestHeaders:
    """Attribute view of a worker Request's message headers, like a task's ``request``."""

    def __init__(self, request: Any) -> None:
        self._headers = getattr(request, "request_dict", None) or {}
        self.id = getattr(request, "id", None)

    def __getattr__(self, name: str) -> Any:
        return self._headers.get(name)
