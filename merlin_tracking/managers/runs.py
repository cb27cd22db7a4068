"""Runs: launches of a study into a workspace. Workspaces are unique."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from merlin_tracking.errors import (
    DuplicateEntityError,
    InvalidRecordError,
    InvalidTransitionError,
    RunNotFoundError,
    choices,
)
from merlin_tracking.ids import new_id
from merlin_tracking.managers.base import Manager, can_name_a_record, require_text
from merlin_tracking.managers.run_query import RunQuery, select_runs
from merlin_tracking.managers.studies import StudyManager
from merlin_tracking.records import Run, RunStatus
from merlin_tracking.records.codec import str_tuple
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.records.run import COUNTERS
from merlin_tracking.records.status import RUN_TRANSITIONS, allowed_sources
from merlin_tracking.stores.base import CatchUp, TrackingStore

PENDING_RUN_ID = "r0"

# Fields a caller may set through ``create``/``update``; anything else goes to additional_data.
SETTABLE = (
    "status",
    "parameters",
    "samples",
    "parent",
    "child",
    "additional_data",
    "task_retention",
)
# Fields only the store maintains.
MANAGED = (
    "id",
    "study_id",
    "workspace",
    "queues",
    "workers",
    "created_at",
    "updated_at",
    "publishing",
    "settle_until",
    "started_at",
    "finished_at",
    "recovered_at",
    *(f"tasks_{name}" for name in COUNTERS),
)


class RunManager(Manager[Run]):
    record_type = Run
    not_found = RunNotFoundError
    catches_up = True

    def __init__(self, store: TrackingStore, studies: StudyManager) -> None:
        super().__init__(store)
        self.studies = studies

    def create(self, study_name: str, workspace: str, queues: Iterable[str], **kwargs: Any) -> Run:
        """Create a run of ``study_name`` (created if missing) in ``workspace``.

        Known fields in ``kwargs`` are set; unknown ones are kept in ``additional_data``.
        Logical workers already consuming one of ``queues`` are attached. Raises
        ``DuplicateEntityError`` if the workspace already has a run.
        """
        return self._store_new(study_name, self._new_run(workspace, queues, kwargs))

    def recover(
        self, run_id: str, study_name: str, workspace: str, queues: Iterable[str], **kwargs: Any
    ) -> Run:
        """Create again a run whose record vanished while its tasks still report (the store
        lost its data, or the run was deleted in use), under its old id when that is free,
        marked with ``recovered_at``: it counts from now on. Its study is created again if it
        is gone too. Raises ``DuplicateEntityError`` (naming it) if the workspace has a run.
        ``kwargs`` as for ``create``."""
        run = self._new_run(workspace, queues, kwargs)
        run = run.replace(id=run_id, recovered_at=run.created_at)
        try:
            return self._store_new(study_name, run, keep_id=True)
        except DuplicateEntityError as exc:
            if exc.field != "id":
                raise
        # The old id went to another run (a store that lost its run sequence numbers runs
        # from 1 again): a fresh id, then.
        return self._store_new(study_name, run)

    def mark_recovered(self, run_id: str) -> None:
        """Mark a run as a recovered one (``recover``) if it is not already: another process
        created it again first, without knowing that the workspace had a run before."""
        run = self.store.fetch(Run, run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        if run.recovered_at is None:
            self.store.update_fields(Run, run_id, {"recovered_at": datetime.now(timezone.utc)})

    def _new_run(self, workspace: str, queues: Iterable[str], kwargs: dict[str, Any]) -> Run:
        """The run to store (id and study to come), its fields checked as ``create`` says."""
        require_text("workspace", workspace)
        queue_list = str_tuple(queues)
        for name in MANAGED:
            if name in kwargs:
                raise InvalidRecordError(
                    f"run field {name!r} is set by merlin_tracking, not by callers"
                )
        known = {k: v for k, v in kwargs.items() if k in SETTABLE}
        extra = {k: v for k, v in kwargs.items() if k not in SETTABLE}
        additional = {**known.pop("additional_data", {}), **extra}
        _, created_at = new_id()
        return Run(
            id=PENDING_RUN_ID,  # the store assigns the id
            study_id="",
            workspace=workspace,
            queues=queue_list,
            created_at=created_at,
            updated_at=created_at,
            additional_data=additional,
            **known,
        )

    def _store_new(self, study_name: str, run: Run, keep_id: bool = False) -> Run:
        """Store a new run in the study called ``study_name``, created if it is missing."""
        # The store finds the study by name or creates it with the run: one round trip.
        return self.store.create_run(run, keep_id=keep_id, study=self.studies.candidate(study_name))

    def get(self, run_id_or_workspace: str) -> Run:
        """The run with this id, else in this workspace; ``RunNotFoundError`` otherwise."""
        return self._fetch(run_id_or_workspace)

    def update(self, run_id_or_workspace: str, **changes: Any) -> Run:
        """Set fields of a run (see ``SETTABLE``); ``updated_at`` moves to now.

        A status change must follow the run state machine (``RUN_TRANSITIONS``), checked
        atomically against the stored status; an illegal one raises InvalidTransitionError and
        changes nothing.
        """
        unknown = set(changes) - set(SETTABLE)
        if unknown:
            raise InvalidRecordError(
                f"cannot update run field(s) {sorted(unknown)}; settable: {', '.join(SETTABLE)}"
            )
        run = self.get(run_id_or_workspace)
        updated = run.replace(**changes, updated_at=datetime.now(timezone.utc))
        if "status" in changes:
            self._move_status(run.id, updated.status)
        values = {name: getattr(updated, name) for name in (*changes, "updated_at")}
        values.pop("status", None)
        self.store.update_fields(Run, run.id, values)
        return self.get(run.id)

    def cancel(self, run_id_or_workspace: str) -> Run:
        """Mark a run CANCELLED; it stays so whatever its tasks report afterwards.

        Cancelling a cancelled run is a no-op; a completed or failed run cannot be cancelled.
        """
        run = self.get(run_id_or_workspace)
        self._move_status(run.id, RunStatus.CANCELLED)
        return self.get(run.id)

    def _move_status(self, run_id: str, target: RunStatus) -> None:
        changed, old = self.store.set_run_status(run_id, target, allowed_sources(target))
        if not changed:
            raise InvalidTransitionError(
                f"run {run_id} cannot go from {old.value} to {target.value}; from {old.value} "
                f"it may go to: {choices(s.value for s in RUN_TRANSITIONS[old]) or 'nothing'}"
            )

    def record_events(
        self,
        events: Sequence[TaskEvent],
        settle: float = 0.0,
        workspaces: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Apply task events (see ``TrackingStore.apply_task_events``); return missing run ids.

        ``settle``: seconds a run with RECEIVED events (tasks first counted at a worker) waits
        after the last of them before it may complete. ``workspaces``: run id -> the workspace
        the caller knows it by; a run now holding another workspace counts as missing."""
        if not (settle >= 0 and math.isfinite(settle)):
            raise InvalidRecordError(f"settle: must be zero or a positive number, got {settle!r}")
        return self.store.apply_task_events(events, settle, workspaces)

    def catch_up(self) -> CatchUp:
        """Apply what time alone made due (``TrackingStore.catch_up``): workers gone stale have
        their tasks marked LOST, runs whose settle time passed are judged again. Every read
        through this manager does it first; worker heartbeats do it too."""
        return self.store.catch_up()

    def settle(self) -> list[str]:
        """``catch_up``, returning the ids of the runs that completed (wave-1 name)."""
        return list(self.catch_up().completed)

    def refresh_queues(self, queues: Sequence[str]) -> None:
        """Judge again the active runs using these queues: their consumers changed (a worker
        dropped a queue), so a run waiting there may now be STALLED."""
        self.store.refresh_runs_on_queues(str_tuple(queues))

    def change_publishing(self, run_id: str, delta: int) -> RunStatus | None:
        """Count a launch in progress (+1) or finished (-1); see ``TrackingStore``."""
        return self.store.change_publishing(run_id, delta)

    def add_queues(self, run_id_or_workspace: str, queues: Sequence[str]) -> Run:
        """Add queues to a run, attaching the logical workers that consume them."""
        run = self.get(run_id_or_workspace)
        return self.store.add_run_queues(run.id, str_tuple(queues))

    def attach_worker(self, run_id_or_workspace: str, logical_worker_id: str) -> bool:
        """Attach a logical worker to a run (both sides); False if it already was."""
        run = self.get(run_id_or_workspace)
        return self.store.link_run_worker(run.id, require_text("worker id", logical_worker_id))

    def detach_worker(self, run_id_or_workspace: str, logical_worker_id: str) -> bool:
        run = self.get(run_id_or_workspace)
        return self.store.link_run_worker(run.id, logical_worker_id, linked=False)

    def query(self, query: RunQuery | None = None) -> list[Run]:
        """The runs matching ``query`` (see ``RunQuery``; none: every run), newest first unless
        it says otherwise. Reads page by page and stops early, so a small limit stays cheap."""
        query = query if query is not None else RunQuery()
        self._fresh()
        return select_runs(self.store, query)

    def count_by_status(self) -> dict[str, int]:
        """Number of runs in each status, every status present (from the status index, without
        reading the runs)."""
        self._fresh()
        return {
            status.value: len(self.store.find_ids(Run, {"status": [status.value]}))
            for status in RunStatus
        }

    def delete(self, run_id_or_workspace: str) -> None:
        """Delete a run; it leaves its study and every logical worker's ``runs``."""
        run = self.get(run_id_or_workspace)
        if not self.store.delete_runs([run.id]):
            raise RunNotFoundError(run_id_or_workspace)

    def delete_many(self, run_ids: Iterable[str]) -> int:
        """Delete the runs with these ids (in atomic batches), as ``delete`` does each; ids with
        no run are skipped. Returns how many were deleted."""
        return self.store.delete_runs([i for i in run_ids if can_name_a_record(i)])

    def delete_all(self) -> int:
        """Delete every run (in atomic batches); return how many."""
        return self.delete_many(self.store.find_ids(Run, {}))
