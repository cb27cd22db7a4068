"""Task events: what the signal hooks report about one task of one run."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, NamedTuple


class TaskEventKind(str, Enum):
    PUBLISHED = "published"
    #: Handed to a worker (``task_received``). Tasks no tracked publisher counted are first
    #: counted here (``COUNTED_AT_WORKER``): their run then waits for the settle delay.
    RECEIVED = "received"
    STARTED = "started"
    RETRIED = "retried"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVOKED = "revoked"
    #: In flight on a worker (or pool process) that died; ``error`` says why.
    LOST = "lost"
    #: STARTED then SUCCEEDED, one event: senders coalesce the pair when both are in one batch.
    RAN = "ran"


#: Event flags (``TaskEvent.flags``): the task was first counted at a worker (no tracked
#: publisher saw it), so its run waits to settle; its success ends the run at once (Merlin's
#: ``mark_run_as_complete``).
COUNTED_AT_WORKER = "w"
ENDS_RUN = "e"


class TaskEvent(NamedTuple):
    """One lifecycle step of task ``task_id`` in run ``run_id``.

    ``at``: when it happened (microseconds since the epoch, the sender's clock; for RAN the
    start, with the end in ``ended``). ``worker``: the Celery node name it happened on.
    ``error``: the failure (type and message) or why the task was lost. Never arguments,
    unless the user opted in: ``message`` is then the task message as the worker received it
    (``tracking_keep_messages``, JSON), kept until the task finishes so a lost task can be
    published again.
    """

    run_id: str
    task_id: str
    kind: TaskEventKind
    queue: str | None = None
    name: str | None = None
    worker: str | None = None
    at: int | None = None
    error: str | None = None
    flags: str = ""
    ended: int | None = None
    message: str | None = None

    def to_json(self, run: str | None = None) -> list[Any]:
        """Compact wire form: [run, task, kind, queue, name, worker, at, error, flags, ended,
        message], without the trailing empty items; ``run`` stands for the run id when given
        (the Redis store sends run numbers)."""
        data: list[Any] = [
            self.run_id if run is None else run,
            self.task_id,
            self.kind.value,
            self.queue,
            self.name,
            self.worker,
            self.at,
            self.error,
            self.flags or None,
            self.ended,
            self.message,
        ]
        while data[-1] is None:
            data.pop()
        return data


def coalesce(events: Sequence[TaskEvent]) -> list[TaskEvent]:
    """Merge each STARTED directly followed (for its task) by SUCCEEDED into one RAN event.

    Applying a batch is atomic and status is judged at its end, so the merged event at the
    STARTED position gives the same counters and status with a third less work.
    """
    merged: list[TaskEvent] = []
    last: dict[tuple[str, str], int] = {}
    for event in events:
        key = (event.run_id, event.task_id)
        index = last.get(key)
        if (
            event.kind is TaskEventKind.SUCCEEDED
            and index is not None
            and merged[index].kind is TaskEventKind.STARTED
        ):
            started = merged[index]
            flags = started.flags + event.flags
            merged[index] = started._replace(
                kind=TaskEventKind.RAN,
                ended=event.at,
                flags="".join(sorted(set(flags))) if flags else "",
                name=started.name or event.name,
            )
            continue
        last[key] = len(merged)
        merged.append(event)
    return merged
