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
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class WorkerStatus(_StrEnum):
    RUNNING = "RUNNING"
    STALLED = "STALLED"
    STOPPED = "STOPPED"
    REBOOTING = "REBOOTING"
