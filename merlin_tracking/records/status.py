"""Status enumerations for runs and physical workers."""

from __future__ import annotations

from enum import Enum

from merlin_tracking.errors import InvalidRecordError, choices


class _StrEnum(str, Enum):
    """A str-valued enum that parses case-insensitively and names valid values on error."""

    @classmethod
    def parse(cls, value: object) -> _StrEnum:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        raise InvalidRecordError(
            f"{value!r} is not a valid {cls.__name__}; "
            f"valid values: {choices(m.value for m in cls)}"
        )

    def __str__(self) -> str:
        return str(self.value)


class RunStatus(_StrEnum):
    INITIALIZED = "INITIALIZED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    #: Unfinished work that nothing can progress: its in-flight tasks were lost with dead
    #: workers, or its queued tasks sit only on queues no live worker consumes. Not final.
    STALLED = "STALLED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class TaskState(_StrEnum):
    """Where one task of a run stands (``records.task``)."""

    QUEUED = "QUEUED"
    RECEIVED = "RECEIVED"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REVOKED = "REVOKED"
    LOST = "LOST"


class WorkerStatus(_StrEnum):
    RUNNING = "RUNNING"
    STALLED = "STALLED"
    STOPPED = "STOPPED"
    REBOOTING = "REBOOTING"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})

# Legal run status changes. Terminal statuses are never left; staying put is always allowed.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.INITIALIZED: frozenset(RunStatus) - {RunStatus.INITIALIZED},
    RunStatus.QUEUED: TERMINAL_RUN_STATUSES | {RunStatus.RUNNING, RunStatus.STALLED},
    RunStatus.RUNNING: TERMINAL_RUN_STATUSES | {RunStatus.STALLED},
    RunStatus.STALLED: TERMINAL_RUN_STATUSES | {RunStatus.QUEUED, RunStatus.RUNNING},
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


def allowed_sources(target: RunStatus) -> list[RunStatus]:
    """Statuses from which a run may move to ``target`` (including ``target`` itself)."""
    return [old for old, targets in RUN_TRANSITIONS.items() if target in targets or old is target]
