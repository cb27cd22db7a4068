"""Logical workers (name + queues) and physical workers (real processes, upserted by name)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from merlin_tracking.errors import InvalidRecordError, WorkerNotFoundError
from merlin_tracking.ids import logical_worker_id, new_id
from merlin_tracking.managers.base import Manager, require_text
from merlin_tracking.managers.filters import check_limit, normalise_filters
from merlin_tracking.records import LogicalWorker, PhysicalWorker, WorkerStatus
from merlin_tracking.records.codec import str_tuple


class LogicalWorkerManager(Manager[LogicalWorker]):
    record_type = LogicalWorker
    not_found = WorkerNotFoundError

    def create(self, name: str, queues: Iterable[str]) -> LogicalWorker:
        """The logical worker ``name`` consuming ``queues``, created if missing (idempotent)."""
        require_text("worker name", name)
        queue_list = str_tuple(queues)
        if not queue_list:
            raise InvalidRecordError("a logical worker needs at least one queue")
        worker_id = logical_worker_id(name, queue_list)
        _, created_at = new_id()
        worker = LogicalWorker(id=worker_id, name=name, queues=queue_list, created_at=created_at)
        if self.store.create_logical_worker(worker):
            return worker
        return self.get(worker_id)

    def get(
        self,
        worker_id: str | None = None,
        worker_name: str | None = None,
        queues: Iterable[str] | None = None,
    ) -> LogicalWorker:
        """By id, or by name + queues (the id derives from them)."""
        if worker_id is None:
            if worker_name is None or queues is None:
                raise InvalidRecordError("give worker_id, or worker_name together with queues")
            worker_id = logical_worker_id(
                require_text("worker name", worker_name), str_tuple(queues)
            )
        elif worker_name is not None or queues is not None:
            raise InvalidRecordError("give worker_id or worker_name + queues, not both")
        return self._fetch(worker_id)

    def delete(
        self,
        worker_id: str | None = None,
        worker_name: str | None = None,
        queues: Iterable[str] | None = None,
    ) -> None:
        """Delete it, detaching it from its runs and its physical workers."""
        worker = self.get(worker_id, worker_name, queues)
        if not self.store.delete_logical_workers([worker.id]):
            raise WorkerNotFoundError(worker.id)

    def delete_all(self) -> int:
        return self.store.delete_logical_workers(self.store.find_ids(LogicalWorker, {}))

    def attach_to_active_runs(self, worker_id: str) -> list[str]:
        """Attach the worker to every active run on its queues; return the runs newly attached."""
        return self.store.attach_worker_to_runs(require_text("worker id", worker_id))


class PhysicalWorkerManager(Manager[PhysicalWorker]):
    record_type = PhysicalWorker
    not_found = WorkerNotFoundError

    SETTABLE = (
        "logical_worker_id",
        "host",
        "pid",
        "status",
        "launch_cmd",
        "args",
        "heartbeat_timestamp",
        "latest_start_time",
        "restart_count",
        "stale_after",
        "scheduler",
        "job_id",
        "job_name",
        "job_nodes",
        "job_ends_at",
    )

    def create(self, name: str, **fields: Any) -> PhysicalWorker:
        """Create or update the worker process named ``name`` (its Celery node name).

        A known name with a different ``pid`` is a restart: ``restart_count`` goes up and
        pid/host/status/start time are refreshed; it never duplicates. ``heartbeat_timestamp``
        defaults to now. ``logical_worker_id`` links it into that logical worker.
        """
        require_text("worker name", name)
        unknown = set(fields) - set(self.SETTABLE)
        if unknown:
            raise InvalidRecordError(
                f"unknown physical worker field(s) {sorted(unknown)}; "
                f"valid: {', '.join(self.SETTABLE)}"
            )
        record_id, created_at = new_id()
        now = datetime.now(timezone.utc)
        defaults: dict[str, Any] = {"heartbeat_timestamp": now}
        if fields.get("pid") is not None:
            defaults["latest_start_time"] = now
        candidate = PhysicalWorker(
            id=record_id, name=name, created_at=created_at, **{**defaults, **fields}
        )
        worker, _ = self.store.upsert_physical_worker(candidate, frozenset(fields))
        return worker

    def get(self, worker_id_or_name: str) -> PhysicalWorker:
        """By id, else by node name."""
        return self._fetch(worker_id_or_name)

    def update(self, worker_id_or_name: str, **changes: Any) -> PhysicalWorker:
        """Set fields of a physical worker (status, heartbeat, ...), indexes kept in step."""
        unknown = set(changes) - set(self.SETTABLE)
        if unknown:
            raise InvalidRecordError(
                f"unknown physical worker field(s) {sorted(unknown)}; "
                f"valid: {', '.join(self.SETTABLE)}"
            )
        worker = self.get(worker_id_or_name)
        updated = worker.replace(**changes)
        self.store.update_fields(
            PhysicalWorker,
            worker.id,
            {name: getattr(updated, name) for name in changes},
        )
        return self.get(worker.id)

    def get_all(
        self, filters: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[PhysicalWorker]:
        """Like ``Manager.get_all``; STALLED is derived from liveness, so a status filter that
        names RUNNING or STALLED is applied to the records read, not to the index."""
        normalised = normalise_filters(PhysicalWorker.ENTITY, filters)
        limit = check_limit(limit)
        wanted = set(normalised.get("status", ()))
        if not wanted & {WorkerStatus.RUNNING.value, WorkerStatus.STALLED.value}:
            return self.store.query(PhysicalWorker, normalised, limit)
        stored = wanted | {WorkerStatus.RUNNING.value}
        workers = self.store.query(PhysicalWorker, {**normalised, "status": sorted(stored)})
        matching = [w for w in workers if w.status.value in wanted]
        return matching[:limit] if limit is not None else matching

    def heartbeat(self, worker_id: str, at: datetime | None = None) -> bool:
        """Refresh the heartbeat (and liveness) of a physical worker; False if it is gone."""
        return self.store.heartbeat(worker_id, at or datetime.now(timezone.utc))

    def mark_stopped(self, worker_id_or_name: str) -> PhysicalWorker:
        """STOPPED with its pid cleared: the worker shut down (its last sign of life now).
        Tasks it still held are LOST; the runs on its queues are judged again."""
        worker = self.get(worker_id_or_name)
        return self.store.stop_worker(worker.id, datetime.now(timezone.utc))

    def delete(self, worker_id_or_name: str) -> None:
        """Delete it and unlink it from its logical worker."""
        worker = self.get(worker_id_or_name)
        if not self.store.delete_physical_workers([worker.id]):
            raise WorkerNotFoundError(worker_id_or_name)

    def delete_all(self) -> int:
        return self.store.delete_physical_workers(self.store.find_ids(PhysicalWorker, {}))


__all__ = ["LogicalWorkerManager", "PhysicalWorkerManager"]
