"""Worker side: task lifecycle signals become task events of the task's run.

Each receiver reads the run headers from the task request and queues one event (with the
worker's node name, the task's name, the time, and for a failure its exception type and
message, never its arguments); it never raises and never waits on the store (see ``buffer``).
Under prefork the start, success, failure and retry run in the pool child, where the tracker
opens its own connection lazily; the receipt, revokes and lost pool processes are reported by
the main process. This is the per-task hot path: a few attribute reads and one append.

With a run resolver, a task that arrives without run headers is resolved once in the main
process (``task_received``) and counted there (a RECEIVED event flagged COUNTED_AT_WORKER: the
run waits ``tracking_settle_seconds`` after the last such receipt before it may complete), and
its request is stamped with the run and the flag, so the pool sees them like headers; the pool
child resolves itself only if that did not happen.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from typing import Any

from merlin_tracking.identity import (
    STUDY_HEADER,
    WORKSPACE_HEADER,
    RunIdentity,
    run_of_headers,
    run_of_request,
)
from merlin_tracking.records.events import COUNTED_AT_WORKER, ENDS_RUN, TaskEventKind
from merlin_tracking.signals.registry import active_tracker
from merlin_tracking.signals.requests import (
    arrival_queue,
    context_body,
    decoded_body,
    described,
    headers_of,
    kept_message,
    opt_str,
)
from merlin_tracking.signals.tracker import Tracker

logger = logging.getLogger("merlin_tracking")

#: Stamped into a request whose task was first counted at this worker (its events carry
#: COUNTED_AT_WORKER, whichever process sends them first).
COUNTED_HEADER = "merlin_tracking_counted"

# Main process: run of each received task, for failures and revokes reported there (hard time
# limits, lost pool processes, Reject), where there is no task context. FIFO-bounded.
_RECEIVED_CAPACITY = 50_000
_received: OrderedDict[str, RunIdentity] = OrderedDict()


def _report(
    run: RunIdentity | None,
    task_id: Any,
    kind: TaskEventKind,
    request: Any = None,
    name: Any = None,
    error: str | None = None,
) -> None:
    try:
        tracker = active_tracker()
        if tracker is not None and run is not None and isinstance(task_id, str):
            task_name = opt_str(name) or opt_str(getattr(request, "task", None))
            flags = _flags(request)
            if kind is TaskEventKind.SUCCEEDED and task_name in tracker.ends_run:
                flags += ENDS_RUN
            worker = _worker_of(tracker, request)
            tracker.record(run, task_id, kind, None, task_name, worker, error, flags)
    except Exception:
        logger.exception("merlin_tracking: %s hook failed (task unaffected)", kind.value)


def _worker_of(tracker: Tracker, request: Any) -> str | None:
    return tracker.node_name or opt_str(getattr(request, "hostname", None))


def _flags(request: Any) -> str:
    counted = getattr(request, COUNTED_HEADER, None)
    return COUNTED_AT_WORKER if counted == "worker" else ""


def _resolve_request(
    tracker: Tracker, request: Any, headers: Mapping[str, Any]
) -> RunIdentity | None:
    """Ask the resolver about a task at the worker (a Request in the main process)."""
    root_id = opt_str(headers.get("root_id"))
    parent_id = opt_str(headers.get("parent_id"))
    group_id = opt_str(headers.get("group"))
    run = tracker.cached(root_id, parent_id, group_id)
    if run is not None:
        return run
    name = str(headers.get("task") or getattr(request, "name", "") or "")
    if not tracker.wants(name):
        return None
    message = tracker.message(
        name=name,
        id=str(headers.get("id") or getattr(request, "id", "") or ""),
        root_id=root_id,
        parent_id=parent_id,
        group_id=group_id,
        headers=headers,
        queue=arrival_queue(request),
        where="worker",
        _load_body=lambda: decoded_body(request),
    )
    return tracker.ask(message)


def _resolve_context(tracker: Tracker, task: Any, request: Any) -> RunIdentity | None:
    """Ask the resolver about the running task (its Context), and keep the answer on it so
    that the task's later events and everything it publishes carry the run."""
    root_id = opt_str(getattr(request, "root_id", None))
    parent_id = opt_str(getattr(request, "parent_id", None))
    group_id = opt_str(getattr(request, "group", None))
    run = tracker.cached(root_id, parent_id, group_id)
    if run is None:
        name = str(getattr(task, "name", "") or "")
        if not tracker.wants(name):
            return None
        headers = getattr(request, "headers", None)
        run = tracker.ask(
            tracker.message(
                name=name,
                id=str(getattr(request, "id", "") or ""),
                root_id=root_id,
                parent_id=parent_id,
                group_id=group_id,
                headers=headers if isinstance(headers, Mapping) else {},
                queue=arrival_queue(request),
                where="worker",
                _load_body=lambda: context_body(request),
            )
        )
    if run is not None:
        setattr(request, STUDY_HEADER, run.study)
        setattr(request, WORKSPACE_HEADER, run.workspace)
        setattr(request, COUNTED_HEADER, "worker")
    return run


def on_task_prerun(sender: Any = None, task_id: Any = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    run = run_of_request(request)
    if run is None and request is not None:
        # The main process stamps what it resolved into the request; this is the fallback.
        tracker = active_tracker()
        if tracker is not None and tracker.resolves:
            try:
                run = _resolve_context(tracker, task, request)
            except Exception:
                logger.exception("merlin_tracking: run resolution failed (task unaffected)")
    _report(run, task_id, TaskEventKind.STARTED, request, getattr(task, "name", None))


def on_task_success(sender: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    _report(
        run_of_request(request),
        getattr(request, "id", None),
        TaskEventKind.SUCCEEDED,
        request,
        getattr(sender, "name", None),
    )


def on_task_failure(
    sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any
) -> None:
    request = getattr(sender, "request", None)
    run = run_of_request(request)
    if run is None and isinstance(task_id, str):
        run = _received.get(task_id)
    # A pool process that died (SIGKILL, OOM) lost the task rather than failing it.
    lost = type(exception).__name__ == "WorkerLostError"
    kind = TaskEventKind.LOST if lost else TaskEventKind.FAILED
    _report(run, task_id, kind, request, getattr(sender, "name", None), described(exception))


def on_task_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    _report(
        run_of_request(request),
        getattr(request, "id", None),
        TaskEventKind.RETRIED,
        request,
        getattr(sender, "name", None),
    )


def on_task_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    # Celery passes the task's Context (headers are attributes); a worker Request object keeps
    # them in ``request_dict``; failing both, use what task_received saw.
    task_id = getattr(request, "id", None)
    run = run_of_request(request) or run_of_headers(headers_of(request))
    if run is None and isinstance(task_id, str):
        run = _received.get(task_id)
        if run is None and request is not None:
            run = _resolve_revoked(sender, request, task_id)
    _report(run, task_id, TaskEventKind.REVOKED, request, getattr(sender, "name", None))


def _resolve_revoked(task: Any, request: Any, task_id: str) -> RunIdentity | None:
    """A task revoked before this worker received it (no task_received): with a resolver,
    resolve it here and count it as queued, so that its run's counters stay exact."""
    tracker = active_tracker()
    if tracker is None or not tracker.resolves:
        return None
    try:
        run = _resolve_context(tracker, task, request)
        if run is not None:
            queue = arrival_queue(request)
            tracker.record(
                run,
                task_id,
                TaskEventKind.RECEIVED,
                queue,
                getattr(task, "name", None),
                _worker_of(tracker, request),
                flags=COUNTED_AT_WORKER,
            )
        return run
    except Exception:
        logger.exception("merlin_tracking: run resolution failed (task unaffected)")
        return None


def on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Main process: count the task as handed to this worker (the ledger's in-flight work, lost
    if the worker dies), and remember its run for failures reported here; with a run resolver,
    resolve tasks that arrive without run headers."""
    try:
        tracker = active_tracker()
        headers = headers_of(request)
        task_id = getattr(request, "id", None)
        if tracker is None or not isinstance(task_id, str):
            return
        run, flags = run_of_headers(headers), ""
        if run is None and headers is not None and tracker.resolves:
            # Never seen by a tracked publisher: resolve it here, count it on the queue it
            # arrived from, and stamp the run into the request the pool runs (so the task's
            # events and its children carry it).
            run = _resolve_request(tracker, request, headers)
            if run is not None:
                flags = COUNTED_AT_WORKER
                if isinstance(headers, MutableMapping):
                    headers[STUDY_HEADER] = run.study
                    headers[WORKSPACE_HEADER] = run.workspace
                    headers[COUNTED_HEADER] = "worker"
        if run is None:
            return
        tracker.record(
            run,
            task_id,
            TaskEventKind.RECEIVED,
            arrival_queue(request),
            opt_str(getattr(request, "name", None)),
            _worker_of(tracker, request),
            flags=flags,
            message=kept_message(request) if tracker.config.keep_messages else None,
        )
        _received[task_id] = run
        if len(_received) > _RECEIVED_CAPACITY:
            _received.popitem(last=False)  # O(1), unlike deleting a plain dict's first key
    except Exception:
        logger.exception("merlin_tracking: task_received hook failed (task unaffected)")
