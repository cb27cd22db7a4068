"""Stopping a run's work: the Celery side of ``merlin-tracking runs cancel RUN``.

Marking a run CANCELLED changes the ledger only; its tasks would still run. So the command
reads the run's unfinished tasks from the ledger and revokes them by id (``control.revoke``, a
broadcast every live worker applies before it answers): a revoked task that a worker has not
started is discarded, and reported REVOKED by the worker's ``task_revoked`` hook. With
``terminate``, the running ones are revoked too and stopped: SIGTERM to their pool process
under prefork, the green thread killed under eventlet and gevent; solo and threads let them
finish.

Limits: workers keep revoked ids in memory (on disk with ``--statedb``), so a worker that
starts later learns them only from live peers (mingle), and would otherwise run the tasks
still queued. A solo worker busy with a task reads the revoke after it, and may start the next
task it prefetched first. Tasks published after the ledger was read are not revoked. Queues
are never purged: other runs may share them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import BrokerUnavailableError
from merlin_tracking.records import TaskState
from merlin_tracking.urls import mask_secrets, mask_url

if TYPE_CHECKING:
    from celery import Celery

#: Tasks a revoke stops before they start: waiting in a queue, prefetched by a worker, waiting
#: to retry, or lost with a worker (a redelivery would run them again).
WAITING_STATES = (TaskState.QUEUED, TaskState.RECEIVED, TaskState.RETRY, TaskState.LOST)
#: Tasks only ``terminate`` stops.
RUNNING_STATES = (TaskState.STARTED,)
#: Seconds to wait for the workers' acknowledgements of a revoke (Celery's default).
REPLY_TIMEOUT = 1.0
#: Task ids per revoke message, so that a large run does not make one huge broadcast.
CHUNK = 1000
TERMINATE_SIGNAL = "SIGTERM"


@dataclasses.dataclass(frozen=True)
class RunWork:
    """The unfinished tasks of one run, by id, as the ledger has them."""

    run_id: str
    waiting: tuple[str, ...] = ()  # not started: revoked
    running: tuple[str, ...] = ()  # started: revoked and signalled only with ``terminate``


@dataclasses.dataclass(frozen=True)
class RevokeReport:
    """What the workers said to a revoke: who acknowledged it, and the errors they replied."""

    answered: tuple[str, ...] = ()  # node names
    errors: tuple[tuple[str, str], ...] = ()  # (node name, error)


def unfinished_work(db: TrackingDatabase, run_id: str) -> RunWork:
    """The run's tasks that a cancel should stop: waiting ones and running ones."""
    waiting = db.tasks.get_all({"run_id": run_id, "state": [s.value for s in WAITING_STATES]})
    running = db.tasks.get_all({"run_id": run_id, "state": [s.value for s in RUNNING_STATES]})
    return RunWork(run_id, tuple(t.id for t in waiting), tuple(t.id for t in running))


def task_ids_to_revoke(work: Sequence[RunWork], terminate: bool) -> list[str]:
    """Every waiting task, and with ``terminate`` every running one too."""
    ids: list[str] = []
    for run in work:
        ids += run.waiting
        if terminate:
            ids += run.running
    return ids


def broker_app(url: str, transport_options: Mapping[str, Any] | None = None) -> Celery:
    """A bare app on ``url``, only to broadcast control commands (close it after use)."""
    from celery import Celery

    app = Celery("merlin_tracking.cancel", broker=url, set_as_current=False)
    app.conf.update(
        broker_transport_options=dict(transport_options or {}),
        broker_connection_timeout=5,
        broker_connection_max_retries=1,
    )
    return app


def revoke(
    app: Celery,
    task_ids: Sequence[str],
    terminate: bool = False,
    timeout: float = REPLY_TIMEOUT,
) -> RevokeReport:
    """Revoke ``task_ids`` on every worker listening on ``app``'s broker, waiting ``timeout``
    seconds for their acknowledgements; ``BrokerUnavailableError`` if the broadcast failed.

    Only the last message asks for replies: a worker applies control messages in order, so
    its acknowledgement of the last covers the others."""
    answered: dict[str, None] = {}
    errors: list[tuple[str, str]] = []
    chunks = _chunks(task_ids)
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        try:
            replies = app.control.revoke(
                list(chunk),
                terminate=terminate,
                signal=TERMINATE_SIGNAL,
                reply=last,
                timeout=timeout,
            )
        except Exception as exc:
            url = mask_url(str(app.conf.broker_url or ""))
            reason = mask_secrets(f"{type(exc).__name__}: {exc}")
            raise BrokerUnavailableError(url, reason) from exc
        for reply in replies or []:
            for node, answer in reply.items():
                answered[node] = None
                if isinstance(answer, dict) and "error" in answer:
                    errors.append((node, str(answer["error"])))
    return RevokeReport(tuple(sorted(answered)), tuple(errors))


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]
