"""Tasks: the ledger of each run's tasks (``db.tasks``), written by the signal hooks.

A task record lives with its run (deleting a run deletes its tasks). Filters go through the
stores' task indexes (``TrackingStore.find_tasks``): the runs that hold matching records, then
only those records, so the cost follows the matches. ``get`` without a run looks in the runs
newest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merlin_tracking.errors import RunNotFoundError, TaskNotFoundError
from merlin_tracking.managers.base import can_name_a_record, require_text
from merlin_tracking.managers.filters import check_limit, normalise_filters
from merlin_tracking.records import Run, Task
from merlin_tracking.stores.base import TrackingStore


class TaskManager:
    def __init__(self, store: TrackingStore) -> None:
        self.store = store

    def get(self, task_id: str, run_id: str | None = None) -> Task:
        """The record of task ``task_id`` (of ``run_id`` when given; else of the newest run
        that has one); ``TaskNotFoundError`` otherwise."""
        require_text("task id", task_id)
        self.store.catch_up_before_read()
        if run_id is not None:
            found = next((t for t in self._of_run(run_id) if t.id == task_id), None)
        else:
            found = self.store.find_task(task_id) if can_name_a_record(task_id) else None
        if found is None:
            raise TaskNotFoundError(task_id)
        return found

    def get_all(
        self, filters: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[Task]:
        """Task records matching ``filters`` (keys ``run_id``, ``state``, ``worker``, ``name``,
        ``queue``; the semantics of every ``get_all``), by run (oldest first), then in the
        order each run's ledger first saw them."""
        normalised = normalise_filters("task", filters)
        limit = check_limit(limit)
        self.store.catch_up_before_read()
        return self.store.find_tasks(normalised, limit)

    def delete(self, task_id: str, run_id: str | None = None) -> None:
        """Delete a task record (its run's counters stay); ``TaskNotFoundError`` if none."""
        task = self.get(task_id, run_id)
        if not self.store.delete_task(task.run_id, task.id):
            raise TaskNotFoundError(task_id)

    # A lost task's kept message (``tracking_keep_messages``), for ``merlin_tracking.requeue``.
    def kept_message_ids(self, run_id: str) -> set[str]:
        """Ids of the run's tasks whose message is kept."""
        return self.store.kept_message_ids(require_text("run id", run_id))

    def take_message(self, task: Task) -> str | None:
        """The kept message of a LOST task, taken away (one taker among concurrent ones)."""
        return self.store.take_message(task.run_id, task.id)

    def keep_message(self, task: Task, message: str) -> bool:
        """Put a message back (it could not be published)."""
        return self.store.keep_message(task.run_id, task.id, message)

    def _of_run(self, run_id: str) -> list[Task]:
        if not can_name_a_record(run_id) or self.store.fetch(Run, run_id) is None:
            raise RunNotFoundError(str(run_id))
        return self.store.run_tasks(run_id)


__all__ = ["TaskManager"]
