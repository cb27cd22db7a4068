"""Draining workers: ``merlin-tracking workers drain --job ID`` (or ``--worker NAME``).

An allocation about to end should finish the tasks it runs and take no new one, which another
allocation's workers then take (or which wait in their queue). Celery's ``cancel_consumer``
control command does that for one queue of the workers it is sent to; this sends it for each
queue of each live worker chosen from the ledger, to those nodes only, through the broker, and
reports who answered. The workers keep running their tasks and exit when the scheduler ends
the job (or when told to shut down). The broker is reached as ``runs cancel`` reaches it
(``cancel.broker_app``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import BrokerUnavailableError
from merlin_tracking.records import PhysicalWorker, WorkerStatus
from merlin_tracking.urls import mask_secrets, mask_url

if TYPE_CHECKING:
    from celery import Celery

#: Seconds to wait for each worker's answer to one ``cancel_consumer``.
REPLY_TIMEOUT = 1.0


@dataclasses.dataclass(frozen=True)
class DrainTarget:
    """A live worker to drain and the queues it consumes."""

    node: str
    queues: tuple[str, ...]
    job_id: str | None = None


@dataclasses.dataclass(frozen=True)
class DrainReport:
    """What a drain did (or, with ``dry_run``, would do)."""

    dry_run: bool
    targets: tuple[DrainTarget, ...] = ()
    drained: tuple[str, ...] = ()  # nodes that answered every cancel_consumer
    silent: tuple[str, ...] = ()  # nodes that did not answer (gone, or not listening)


def _queues(db: TrackingDatabase, worker: PhysicalWorker) -> tuple[str, ...]:
    if worker.logical_worker_id is None:
        return tuple(str(q) for q in worker.args.get("queues") or ())
    return db.logical_workers.get(worker.logical_worker_id).queues


def targets(
    db: TrackingDatabase, job_ids: Sequence[str] = (), workers: Sequence[str] = ()
) -> list[DrainTarget]:
    """The live (RUNNING) workers of the given jobs and the given workers (id or node name)."""
    chosen: dict[str, PhysicalWorker] = {}
    if job_ids:
        live = {"job_id": list(job_ids), "status": WorkerStatus.RUNNING.value}
        for worker in db.physical_workers.get_all(live):
            chosen[worker.id] = worker
    for name in workers:
        worker = db.physical_workers.get(name)
        if worker.status is WorkerStatus.RUNNING:
            chosen[worker.id] = worker
    ordered = sorted(chosen.values(), key=lambda w: w.name)
    return [DrainTarget(w.name, _queues(db, w), w.job_id) for w in ordered]


def drain(
    app: Celery, chosen: Sequence[DrainTarget], timeout: float = REPLY_TIMEOUT
) -> DrainReport:
    """Send ``cancel_consumer`` for each queue of each target to that node alone;
    ``BrokerUnavailableError`` if the broker could not carry it."""
    answered: dict[str, int] = {}
    for target in chosen:
        for queue in target.queues:
            try:
                replies = app.control.cancel_consumer(
                    queue, destination=[target.node], reply=True, timeout=timeout
                )
            except Exception as exc:
                url = mask_url(str(app.conf.broker_url or ""))
                reason = mask_secrets(f"{type(exc).__name__}: {exc}")
                raise BrokerUnavailableError(url, reason) from exc
            for reply in replies or []:
                if target.node in reply:
                    answered[target.node] = answered.get(target.node, 0) + 1
    drained = tuple(t.node for t in chosen if answered.get(t.node, 0) >= len(t.queues))
    silent = tuple(t.node for t in chosen if t.node not in drained)
    return DrainReport(False, tuple(chosen), drained, silent)
