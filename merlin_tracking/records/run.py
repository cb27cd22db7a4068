"""A run: one launch of a study into a workspace, with the queues its tasks go to."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, ClassVar

from merlin_tracking.records import codec
from merlin_tracking.records.base import Record
from merlin_tracking.records.status import RunStatus

COUNTERS = ("queued", "started", "succeeded", "failed", "retried", "revoked", "lost")
ACTIVE_STATUSES = frozenset(
    {RunStatus.INITIALIZED, RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.STALLED}
)


@dataclasses.dataclass(frozen=True)
class Run(Record):
    ENTITY: ClassVar[str] = "run"
    # 2: task counters gained ``tasks_lost``; ``started_at``, ``finished_at``, ``task_retention``.
    # ``recovered_at`` came later without a new version: it is absent unless set, and a reader
    # that does not know it ignores it, so older readers still read every run.
    SCHEMA_VERSION: ClassVar[int] = 2
    CODECS: ClassVar[dict[str, codec.Codec]] = {
        "study_id": codec.OPT_STR,
        "workspace": codec.STR,
        "queues": codec.STR_TUPLE,
        "workers": codec.STR_TUPLE,
        "status": codec.enum_codec(RunStatus.parse),
        "parameters": codec.JSON_MAPPING,
        "samples": codec.JSON,
        "parent": codec.OPT_STR,
        "child": codec.OPT_STR,
        "additional_data": codec.JSON_MAPPING,
        "created_at": codec.DATETIME,
        "updated_at": codec.DATETIME,
        **{f"tasks_{name}": codec.INT for name in COUNTERS},
        "publishing": codec.INT,
        "settle_until": codec.OPT_DATETIME,
        "started_at": codec.OPT_DATETIME,
        "finished_at": codec.OPT_DATETIME,
        "task_retention": codec.OPT_NONNEGATIVE_SECONDS,
        "recovered_at": codec.OPT_DATETIME,
    }

    study_id: str | None
    workspace: str
    updated_at: datetime
    queues: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()
    status: RunStatus = RunStatus.INITIALIZED
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    samples: Any = None
    parent: str | None = None
    child: str | None = None
    additional_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Task counters, kept exact by the signal hooks (each task id counts once per counter,
    # except ``tasks_retried`` which counts retry events).
    tasks_queued: int = 0
    tasks_started: int = 0
    tasks_succeeded: int = 0
    tasks_failed: int = 0
    tasks_retried: int = 0
    tasks_revoked: int = 0
    # Tasks LOST now (in flight on a worker that died); they leave it when redelivered.
    tasks_lost: int = 0
    # Launches still publishing; a run cannot complete while this is above zero.
    publishing: int = 0
    # Set when a worker counts a task no tracked publisher saw (more may still be on their way):
    # the run cannot complete before this time, which each such receipt pushes back.
    settle_until: datetime | None = None
    # When its first task started, and (once the run is no longer active) when its last task
    # finished: the run's duration, which settling and later bookkeeping never move.
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Seconds the task records of this run are kept once it is finished (None: for good, 0:
    # dropped at completion, counters kept); set from ``tracking_task_retention``.
    task_retention: float | None = None
    # Set when the run's record vanished while its tasks still reported (the store lost its
    # data, or the run was deleted in use) and their next events recreated it: its counters
    # and task records start at this time, what came before is gone.
    recovered_at: datetime | None = None

    @property
    def counters(self) -> dict[str, int]:
        """Task counters by name: queued, started, succeeded, failed, retried, revoked, lost."""
        return {name: getattr(self, f"tasks_{name}") for name in COUNTERS}

    @property
    def tasks_finished(self) -> int:
        return self.tasks_succeeded + self.tasks_failed + self.tasks_revoked

    @property
    def tasks_unfinished(self) -> int:
        """Counted tasks that have not finished (queued, running, retrying or lost)."""
        return max(0, self.tasks_queued - self.tasks_finished)

    @property
    def is_active(self) -> bool:
        """True until the run reaches COMPLETED, FAILED or CANCELLED."""
        return self.status in ACTIVE_STATUSES

    # Getters of the reference API, kept thin.
    def get_study_id(self) -> str | None:
        return self.study_id

    def get_workspace(self) -> str:
        return self.workspace

    def get_queues(self) -> list[str]:
        return list(self.queues)

    def get_workers(self) -> list[str]:
        return list(self.workers)

    def get_run_status(self) -> RunStatus:
        return self.status

    def get_parameters(self) -> dict[str, Any]:
        return dict(self.parameters)

    def get_samples(self) -> Any:
        return self.samples

    def get_parent(self) -> str | None:
        return self.parent

    def get_child(self) -> str | None:
        return self.child

    def get_additional_data(self) -> dict[str, Any]:
        return dict(self.additional_data)

    def get_updated_at(self) -> datetime:
        return self.updated_at
