"""Publishing lost tasks again: ``merlin-tracking runs requeue RUN --lost``.

With ``tracking_keep_messages`` on, the ledger keeps each in-flight task's message as the
worker received it (body, headers, properties, routing) until the task finishes. A task lost
with its worker can then be published again, exactly as it was: under its own id, to its own
queue. Each kept message is taken from the ledger atomically before it is published, so of any
number of concurrent requeues one publishes it; if publishing fails, the message is put back.
The task then reads QUEUED (no longer LOST) and is counted once, however often it is lost and
requeued.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from kombu.connection import Connection

from merlin_tracking.database import TrackingDatabase
from merlin_tracking.records import Task, TaskState
from merlin_tracking.records.events import TaskEvent, TaskEventKind

# Message properties worth sending again (the transport sets the others, e.g. delivery tags).
_PROPERTIES = ("correlation_id", "reply_to", "priority", "delivery_mode", "expiration")


@dataclasses.dataclass(frozen=True)
class RequeueReport:
    """What a requeue did (or, with ``dry_run``, would do)."""

    run_id: str
    dry_run: bool
    requeued: tuple[str, ...] = ()  # published again
    without_message: tuple[str, ...] = ()  # lost, but no message was kept (or another took it)
    failed: tuple[tuple[str, str], ...] = ()  # (task id, why): not published, message kept


def requeue_lost(
    db: TrackingDatabase,
    run: str,
    broker_url: str | None,
    dry_run: bool = False,
    transport_options: Mapping[str, Any] | None = None,
) -> RequeueReport:
    """Publish every LOST task of ``run`` (id or workspace) that has a kept message again."""
    record = db.runs.get(run)
    lost = db.tasks.get_all({"run_id": record.id, "state": TaskState.LOST.value})
    kept = db.tasks.kept_message_ids(record.id)
    if dry_run or not lost:
        return RequeueReport(
            record.id,
            dry_run,
            requeued=tuple(t.id for t in lost if t.id in kept),
            without_message=tuple(t.id for t in lost if t.id not in kept),
        )
    requeued: list[str] = []
    without: list[str] = []
    failed: list[tuple[str, str]] = []
    options = dict(transport_options or {})
    with Connection(broker_url, transport_options=options) as connection:  # type: ignore[no-untyped-call]
        producer = connection.Producer()
        for task in lost:
            message = db.tasks.take_message(task)
            if message is None:
                without.append(task.id)
                continue
            try:
                queue = _publish(producer, message)
            except Exception as exc:
                db.tasks.keep_message(task, message)
                failed.append((task.id, f"{type(exc).__name__}: {exc}"))
                continue
            _count_published(db, task, queue)
            requeued.append(task.id)
    return RequeueReport(record.id, False, tuple(requeued), tuple(without), tuple(failed))


def _publish(producer: Any, message: str) -> str | None:
    document = json.loads(message)
    properties = document.get("properties") or {}
    producer.publish(
        base64.b64decode(document["body"]),
        exchange=document.get("exchange") or "",
        routing_key=document.get("routing_key"),
        headers=document.get("headers") or {},
        content_type=document.get("content_type"),
        content_encoding=document.get("content_encoding"),
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        **{name: properties[name] for name in _PROPERTIES if properties.get(name) is not None},
    )
    routing_key = document.get("routing_key")
    return routing_key if isinstance(routing_key, str) and routing_key else None


def _count_published(db: TrackingDatabase, task: Task, queue: str | None) -> None:
    db.runs.record_events(
        [TaskEvent(task.run_id, task.id, TaskEventKind.PUBLISHED, queue or task.queue, task.name)]
    )
