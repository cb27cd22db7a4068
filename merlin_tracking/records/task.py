"""A task of a run, as the ledger knows it: where it stands, where it ran, how it ended.

Both stores keep a task's state as one letter (the same letters, so their rules read alike):
``q`` queued, ``c`` received by a worker, ``s`` started, ``r`` waiting to be retried, ``S``,
``F``, ``R`` succeeded, failed, revoked, ``L`` lost with a dead worker. A record never holds
task arguments; ``error`` is the exception type and message of a failure (at most
``ERROR_LIMIT`` bytes), or the reason a task was lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import ClassVar

from merlin_tracking.records import codec
from merlin_tracking.records.base import Record
from merlin_tracking.records.status import TaskState

#: Bytes of an error (UTF-8) kept with a failed or lost task.
ERROR_LIMIT = 1024

STATE_LETTERS: dict[TaskState, str] = {
    TaskState.QUEUED: "q",
    TaskState.RECEIVED: "c",
    TaskState.STARTED: "s",
    TaskState.RETRY: "r",
    TaskState.SUCCEEDED: "S",
    TaskState.FAILED: "F",
    TaskState.REVOKED: "R",
    TaskState.LOST: "L",
}
LETTER_STATES: dict[str, TaskState] = {letter: state for state, letter in STATE_LETTERS.items()}
FINISHED_TASK_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.REVOKED})
#: On a worker: if the worker dies, the task is lost.
IN_FLIGHT_TASK_STATES = frozenset({TaskState.RECEIVED, TaskState.STARTED})


def clip_error(text: str) -> str:
    """``text`` cut to at most ``ERROR_LIMIT`` bytes of UTF-8 (never inside a character)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= ERROR_LIMIT:
        return text
    return data[: ERROR_LIMIT - 3].decode("utf-8", "ignore") + "..."


@dataclasses.dataclass(frozen=True)
class Task(Record):
    """One task (Celery task id ``id``) of run ``run_id``; ``created_at``: first seen."""

    ENTITY: ClassVar[str] = "task"
    CODECS: ClassVar[dict[str, codec.Codec]] = {
        "run_id": codec.STR,
        "name": codec.OPT_STR,
        "queue": codec.OPT_STR,
        "state": codec.enum_codec(TaskState.parse),
        "worker": codec.OPT_STR,
        "attempts": codec.INT,
        "queued_at": codec.OPT_DATETIME,
        "started_at": codec.OPT_DATETIME,
        "finished_at": codec.OPT_DATETIME,
        "error": codec.OPT_STR,
        "created_at": codec.DATETIME,
    }

    run_id: str
    state: TaskState = TaskState.QUEUED
    name: str | None = None
    queue: str | None = None
    #: Celery node name of the worker that received or ran it last (None before).
    worker: str | None = None
    #: Starts, retries and redeliveries counted: each execution of the task is one attempt.
    attempts: int = 0
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_TASK_STATES

    @property
    def duration(self) -> float | None:
        """Seconds from its (last) start to its end, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


def task_matches(task: Task, filters: Mapping[str, Sequence[str]]) -> bool:
    """Whether a record matches every filter (``run_id``, ``state``, ``name``, ``queue``,
    ``worker``, each a list of accepted values): the one copy of the rule."""
    for key, values in filters.items():
        if key == "run_id":
            value: str | None = task.run_id
        elif key == "state":
            value = task.state.value
        else:
            value = getattr(task, key)
        if value not in values:
            return False
    return True
