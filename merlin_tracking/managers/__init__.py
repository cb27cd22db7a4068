"""Managers: the domain rules (creation, lookups, cascades) on top of a store."""

from merlin_tracking.managers.run_query import InvalidPeriodError, RunQuery
from merlin_tracking.managers.runs import RunManager
from merlin_tracking.managers.studies import StudyManager
from merlin_tracking.managers.tasks import TaskManager
from merlin_tracking.managers.workers import LogicalWorkerManager, PhysicalWorkerManager

__all__ = [
    "InvalidPeriodError",
    "LogicalWorkerManager",
    "PhysicalWorkerManager",
    "RunManager",
    "RunQuery",
    "StudyManager",
    "TaskManager",
]
