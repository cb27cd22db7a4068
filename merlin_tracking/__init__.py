"""merlin_tracking: an always-correct ledger of Celery workflow runs in a shared Redis."""

__version__ = "0.1.0"

from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import (
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidFilterError,
    InvalidRecordError,
    InvalidTransitionError,
    RunNotFoundError,
    StoreUnavailableError,
    StudyNotFoundError,
    TrackingError,
    WorkerNotFoundError,
)
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Run,
    RunStatus,
    Study,
    WorkerStatus,
)

__all__ = [
    "DuplicateEntityError",
    "EntityNotFoundError",
    "InvalidFilterError",
    "InvalidRecordError",
    "InvalidTransitionError",
    "LogicalWorker",
    "PhysicalWorker",
    "Run",
    "RunNotFoundError",
    "RunStatus",
    "StoreUnavailableError",
    "Study",
    "StudyNotFoundError",
    "TrackingDatabase",
    "TrackingError",
    "WorkerNotFoundError",
    "WorkerStatus",
    "__version__",
]
