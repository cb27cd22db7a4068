"""Task events: what the signal hooks report about one task of one run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from enum import Enum


class TaskEventKind(str, Enum):
    PUBLISHED = "published"
    #: Queued, first seen at a worker (no tracked publisher counted it): the run waits for the
    #: settle delay after the last such receipt before it may complete.
    RECEIVED = "received"
    STARTED = "started"
    RETRIED = "retried"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVOKED = "revoked"
    #: STARTED then SUCCEEDED, one event: senders coalesce the pair when both are in one batch.
    RAN = "ran"


@dataclasses.dataclass(frozen=True)
class TaskEvent:
    """One lifecycle step of task ``task_id`` in run ``run_id`` (``queue`` when published)."""

    run_id: str
    task_id: str
    kind: TaskEventKind
    queue: str | None = None

    def to_json(self) -> list[str]:
        """Compact wire form: [run id, task id, kind] plus the queue when there is one."""
        data = [self.run_id, self.task_id, self.kind.value]
        if self.queue:
            data.append(self.queue)
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
            merged[index] = dataclasses.replace(merged[index], kind=TaskEventKind.RAN)
            continue
        last[key] = len(merged)
        merged.append(event)
    return merged
