"""Typed, immutable records: what a study, a run and a worker are."""

from merlin_tracking.records.base import Record
from merlin_tracking.records.run import Run
from merlin_tracking.records.status import RunStatus, TaskState, WorkerStatus
from merlin_tracking.records.study import Study
from merlin_tracking.records.task import Task
from merlin_tracking.records.workers import LogicalWorker, PhysicalWorker

__all__ = [
    "LogicalWorker",
    "PhysicalWorker",
    "Record",
    "Run",
    "RunStatus",
    "Study",
    "Task",
    "TaskState",
    "WorkerStatus",
]
