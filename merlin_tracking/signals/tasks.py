"""Worker side: task lifecycle signals become task events of the task's run.

Each receiver reads the run headers from the task request and queues one event; it never
raises and never waits on Redis (see ``buffer``). Under prefork these run in the pool child,
where the tracker opens its own connection lazily. This is the per-task hot path: receivers do
a few attribute reads and one append.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from merlin_tracking.records.events import TaskEventKind
from merlin_tracking.signals.publish import run_of_headers, run_of_request
from merlin_tracking.signals.state import active_tracker
from merlin_tracking.signals.tracker import RunIdentity

logger = logging.getLogger("merlin_tracking")

# Main process: run of each received task, for failures and revokes reported there (hard time
# limits, lost pool processes, Reject), where there is no task context. FIFO-bounded.
_RECEIVED_CAPACITY = 50_000
_received: dict[str, RunIdentity] = {}


def _report(run: RunIdentity | None, task_id: Any, kind: TaskEventKind) -> None:
    try:
        tracker = active_tracker()
        if tracker is not None and run is not None and isinstance(task_id, str):
            tracker.record(run, task_id, kind)
    except Exception:
        logger.exception("merlin_tracking: %s hook failed (task unaffected)", kind.value)


def _headers_of(request: Any) -> Mapping[str, Any] | None:
    """Message headers of a worker Request object (``request_dict``), if it has them."""
    headers = getattr(request, "request_dict", None)
    return headers if isinstance(headers, Mapping) else None


def on_task_prerun(sender: Any = None, task_id: Any = None, task: Any = None, **_: Any) -> None:
    _report(run_of_request(getattr(task, "request", None)), task_id, TaskEventKind.STARTED)


def on_task_success(sender: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    _report(run_of_request(request), getattr(request, "id", None), TaskEventKind.SUCCEEDED)


def on_task_failure(sender: Any = None, task_id: Any = None, **_: Any) -> None:
    run = run_of_request(getattr(sender, "request", None))
    if run is None and isinstance(task_id, str):
        run = _received.get(task_id)
    _report(run, task_id, TaskEventKind.FAILED)


def on_task_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    _report(run_of_request(request), getattr(request, "id", None), TaskEventKind.RETRIED)


def on_task_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    # Celery passes the task's Context (headers are attributes); a worker Request object keeps
    # them in ``request_dict``; failing both, use what task_received saw.
    task_id = getattr(request, "id", None)
    run = run_of_request(request) or run_of_headers(_headers_of(request))
    if run is None and isinstance(task_id, str):
        run = _received.get(task_id)
    _report(run, task_id, TaskEventKind.REVOKED)


def on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Main process: remember each tracked task's run for failures reported there."""
    try:
        run = run_of_headers(_headers_of(request))
        task_id = getattr(request, "id", None)
        if run is not None and isinstance(task_id, str):
            _received[task_id] = run
            if len(_received) > _RECEIVED_CAPACITY:
                del _received[next(iter(_received))]
    except Exception:
        logger.exception("merlin_tracking: task_received hook failed (task unaffected)")
