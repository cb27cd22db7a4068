"""Publish side: stamp run headers on outgoing messages and count them as queued.

A message belongs to a run when its headers name a study and a workspace. ``launch_study``
sets them for everything it publishes (through ``launching``); a message published while a
tracked task runs (subtasks, callbacks, chord bodies, retries, replacements) inherits them from
that task. Without either, the configured run resolver (``merlin_tracking.resolvers``) may name
the run. Only headers and routing are read: bodies are never deserialised.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from celery import current_task

from merlin_tracking.identity import (
    STUDY_HEADER,
    WORKSPACE_HEADER,
    RunIdentity,
    run_of_headers,
    run_of_request,
)
from merlin_tracking.records.events import TaskEventKind
from merlin_tracking.resolvers.message import TaskMessage, body_parts
from merlin_tracking.signals.registry import active_tracker
from merlin_tracking.signals.tracker import Tracker

logger = logging.getLogger("merlin_tracking")

_launching: contextvars.ContextVar[tuple[RunIdentity, Tracker] | None] = contextvars.ContextVar(
    "merlin_tracking_launching", default=None
)


@contextlib.contextmanager
def launching(run: RunIdentity, tracker: Tracker) -> Iterator[None]:
    """Messages published in this block (this thread or task) belong to ``run`` and are
    counted by ``tracker`` (the launching app's, whichever app is Celery's current one)."""
    token = _launching.set((run, tracker))
    try:
        yield
    finally:
        _launching.reset(token)


def _inherited_run() -> RunIdentity | None:
    task = current_task._get_current_object() if current_task else None
    request = getattr(task, "request", None)
    if request is None or getattr(request, "called_directly", True):
        return None
    return run_of_request(request)


def queue_of(routing_key: Any, declare: Any, properties: Mapping[str, Any] | None) -> str | None:
    """Name of the queue a message is routed to, from routing data only."""
    for queue in declare or ():
        name = getattr(queue, "name", None)
        if name:
            return str(name)
    delivery = (properties or {}).get("delivery_info") or {}
    key = routing_key or delivery.get("routing_key")
    return str(key) if key else None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _message_of(
    tracker: Tracker, headers: Mapping[str, Any], body: Any, queue: str | None
) -> TaskMessage:
    """The resolver's view of a message being published (body parts from the unserialised body)."""
    return tracker.message(
        name=str(headers.get("task") or ""),
        id=str(headers.get("id") or ""),
        root_id=_opt_str(headers.get("root_id")),
        parent_id=_opt_str(headers.get("parent_id")),
        group_id=_opt_str(headers.get("group")),
        headers=headers,
        queue=queue,
        where="publish",
        _load_body=lambda: body_parts(body),
    )


def on_before_task_publish(
    sender: Any = None,
    body: Any = None,
    exchange: Any = None,
    routing_key: Any = None,
    headers: dict[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
    declare: Any = None,
    **_: Any,
) -> None:
    """``before_task_publish`` receiver; never raises."""
    try:
        launch = _launching.get()
        tracker = launch[1] if launch is not None else active_tracker()
        if tracker is None or headers is None:
            return
        run = run_of_headers(headers)
        if run is None:
            run = launch[0] if launch is not None else _inherited_run()
            if run is None and tracker.resolves:
                # No run headers, none to inherit: ask the configured run resolver.
                run = tracker.cached(
                    _opt_str(headers.get("root_id")),
                    _opt_str(headers.get("parent_id")),
                    _opt_str(headers.get("group")),
                )
                if run is None and tracker.wants(str(headers.get("task") or "")):
                    queue = queue_of(routing_key, declare, properties)
                    run = tracker.ask(_message_of(tracker, headers, body, queue))
            if run is None:
                return
            headers[STUDY_HEADER], headers[WORKSPACE_HEADER] = run.study, run.workspace
        task_id = headers.get("id")
        if not isinstance(task_id, str):
            return
        name = headers.get("task")
        tracker.record(
            run,
            task_id,
            TaskEventKind.PUBLISHED,
            queue_of(routing_key, declare, properties),
            name if isinstance(name, str) else None,
        )
    except Exception:
        logger.exception("merlin_tracking: before_task_publish hook failed (task unaffected)")


__all__ = ["launching", "on_before_task_publish", "queue_of"]
