"""merlin_tracking: an always-correct ledger of Celery workflow runs in a shared Redis."""

from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import (
    ConfigurationError,
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidFilterError,
    InvalidRecordError,
    InvalidTransitionError,
    RunNotFoundError,
    StoreError,
    StoreRefusedError,
    StoreUnavailableError,
    StudyNotFoundError,
    TaskNotFoundError,
    TrackingError,
    WorkerNotFoundError,
)
from merlin_tracking.identity import RunIdentity
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Run,
    RunStatus,
    Study,
    Task,
    TaskState,
    WorkerStatus,
)
from merlin_tracking.version import __version__

_CELERY_GLUE = ("install", "launch_study", "study_launched")


def __getattr__(name: str) -> object:
    # The Celery glue is imported on first use, so store-only users never import Celery.
    if name in _CELERY_GLUE:
        from merlin_tracking import signals

        return getattr(signals, name)
    raise AttributeError(f"module 'merlin_tracking' has no attribute {name!r}")


__all__ = [
    "ConfigurationError",
    "DuplicateEntityError",
    "EntityNotFoundError",
    "InvalidFilterError",
    "InvalidRecordError",
    "InvalidTransitionError",
    "LogicalWorker",
    "PhysicalWorker",
    "Run",
    "RunIdentity",
    "RunNotFoundError",
    "RunStatus",
    "StoreError",
    "StoreRefusedError",
    "StoreUnavailableError",
    "Study",
    "StudyNotFoundError",
    "Task",
    "TaskNotFoundError",
    "TaskState",
    "TrackingDatabase",
    "TrackingError",
    "WorkerNotFoundError",
    "WorkerStatus",
    "__version__",
    "install",
    "launch_study",
    "study_launched",
]
