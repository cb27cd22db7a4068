"""Workers: a logical worker (name + queues) and the physical processes that embody it."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, ClassVar

from merlin_tracking.records import codec
from merlin_tracking.records.base import Record
from merlin_tracking.records.status import WorkerStatus


@dataclasses.dataclass(frozen=True)
class LogicalWorker(Record):
    """A worker name plus the queues it consumes; its id derives from both (``ids``)."""

    ENTITY: ClassVar[str] = "logical_worker"
    CODECS: ClassVar[dict[str, codec.Codec]] = {
        "name": codec.STR,
        "queues": codec.Codec(lambda v: sorted(codec.str_tuple(v)), tuple, tuple),
        "created_at": codec.DATETIME,
    }
    RELATIONS: ClassVar[tuple[str, ...]] = ("runs", "physical_workers")

    name: str
    queues: tuple[str, ...]
    runs: tuple[str, ...] = ()
    physical_workers: tuple[str, ...] = ()

    def get_name(self) -> str:
        return self.name

    def get_queues(self) -> list[str]:
        return list(self.queues)

    def get_runs(self) -> list[str]:
        return list(self.runs)

    def get_physical_workers(self) -> list[str]:
        return list(self.physical_workers)


@dataclasses.dataclass(frozen=True)
class PhysicalWorker(Record):
    """One real worker process, named by its Celery node name (``w1@host``)."""

    ENTITY: ClassVar[str] = "physical_worker"
    CODECS: ClassVar[dict[str, codec.Codec]] = {
        "logical_worker_id": codec.OPT_STR,
        "name": codec.STR,
        "host": codec.OPT_STR,
        "pid": codec.OPT_INT,
        "status": codec.enum_codec(WorkerStatus.parse),
        "launch_cmd": codec.MASKED_OPT_STR,
        "args": codec.MASKED_JSON_MAPPING,
        "heartbeat_timestamp": codec.OPT_DATETIME,
        "latest_start_time": codec.OPT_DATETIME,
        "restart_count": codec.INT,
        "stale_after": codec.OPT_SECONDS,
        "scheduler": codec.OPT_STR,
        "job_id": codec.OPT_STR,
        "job_name": codec.OPT_STR,
        "job_nodes": codec.OPT_STR,
        "job_ends_at": codec.OPT_DATETIME,
        "created_at": codec.DATETIME,
    }

    name: str
    logical_worker_id: str | None = None
    host: str | None = None
    pid: int | None = None
    status: WorkerStatus = WorkerStatus.RUNNING
    launch_cmd: str | None = None
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    heartbeat_timestamp: datetime | None = None
    latest_start_time: datetime | None = None
    restart_count: int = 0
    # Seconds without a heartbeat after which a RUNNING worker reads as STALLED (None: never).
    stale_after: float | None = None
    # The batch allocation it runs in (``merlin_tracking.schedulers``), None outside one: the
    # scheduler (slurm, flux, lsf, pbs), its job id and name, its nodes as the scheduler writes
    # them, and when it ends. Added without a new SCHEMA_VERSION: absent unless set, and a
    # reader that does not know them ignores them.
    scheduler: str | None = None
    job_id: str | None = None
    job_name: str | None = None
    job_nodes: str | None = None
    job_ends_at: datetime | None = None

    def get_name(self) -> str:
        return self.name

    def get_logical_worker_id(self) -> str | None:
        return self.logical_worker_id

    def get_host(self) -> str | None:
        return self.host

    def get_pid(self) -> int | None:
        return self.pid

    def get_worker_status(self) -> WorkerStatus:
        return self.status

    def get_launch_cmd(self) -> str | None:
        return self.launch_cmd

    def get_args(self) -> dict[str, Any]:
        return dict(self.args)

    def get_heartbeat_timestamp(self) -> datetime | None:
        return self.heartbeat_timestamp

    def get_latest_start_time(self) -> datetime | None:
        return self.latest_start_time

    def get_restart_count(self) -> int:
        return self.restart_count
