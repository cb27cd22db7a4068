"""Task events: what the signal hooks report about one task of one run."""

from __future__ import annotations

import dataclasses
from enum import Enum


class TaskEventKind(str, Enum):
    PUBLISHED = "published"
    STARTED = "started"
    RETRIED = "retried"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVOKED = "revoked"


@dataclasses.dataclass(frozen=True)
class TaskEvent:
    """One lifecycle step of task ``task_id`` in run ``run_id`` (``queue`` when published)."""

    run_id: str
    task_id: str
    kind: TaskEventKind
    queue: str | None = None

    def to_json(self) -> dict[str, str]:
        data = {"r": self.run_id, "t": self.task_id, "e": self.kind.value}
        if self.queue:
            data["q"] = self.queue
        return data
