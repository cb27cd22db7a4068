"""The per-process tracker behind the signal hooks.

It owns the database handle (opened lazily, again after a fork), the buffer of task events, the
run resolver ``install`` loaded, and the cache of workspace -> run id. Hooks call ``record``;
the buffer's thread calls ``_send``, which finds or creates the run of each workspace
(``ensure_run``: exactly once across processes, the store's unique workspace index decides)
and applies the events in one store call.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from merlin_tracking.config import TrackingConfig
from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import DuplicateEntityError, InvalidRecordError, StoreUnavailableError
from merlin_tracking.identity import RUN_HEADERS, STUDY_HEADER, WORKSPACE_HEADER, RunIdentity
from merlin_tracking.records import Run
from merlin_tracking.records.events import TaskEvent, TaskEventKind, coalesce
from merlin_tracking.resolvers import Resolver, TaskMessage, headers_resolver
from merlin_tracking.signals.buffer import FlushingBuffer

logger = logging.getLogger("merlin_tracking")

# One buffered task event: (run, task id, kind, queue, task name, worker node, microseconds,
# error, flags, kept message). A plain tuple: this is the hot path.
PendingEvent = tuple[
    RunIdentity,
    str,
    TaskEventKind,
    str | None,
    str | None,
    str | None,
    int,
    str | None,
    str,
    str | None,
]

# Seconds added to a settle deadline to cover the buffer's flush delay.
_SETTLE_MARGIN = 0.5

# Resolved runs remembered per root and group id (FIFO-bounded; an OrderedDict drops its oldest
# entry in O(1)): one resolver call per workflow and process.
_RESOLVED_CAPACITY = 10_000


def _any_name(name: str) -> bool:
    return True


class Tracker:
    """Tracking state of one process for one configuration.

    ``resolver``: the run resolver for messages without run headers (``install`` loads the
    configured one); the default ``headers_resolver`` only reads the run headers, which the
    hooks read anyway, so with it nothing is resolved.
    """

    def __init__(
        self,
        config: TrackingConfig,
        app_name: str | None = None,
        resolver: Resolver = headers_resolver,
    ) -> None:
        self.config = config
        self.app_name = app_name
        self.resolver = resolver
        self.resolves = resolver is not headers_resolver
        self.wants: Callable[[str], bool] = getattr(resolver, "wants", _any_name)
        #: Names of tasks whose success completes their run at once (``resolver.ends_run``).
        self.ends_run: frozenset[str] = frozenset(getattr(resolver, "ends_run", ()))
        self._resolved: OrderedDict[str, RunIdentity] = OrderedDict()
        #: The Celery node name of the worker this process belongs to (set by the worker
        #: bootstep before the pool starts, so pool processes inherit it): task requests do not
        #: always carry it (Celery puts the host name in some pools' requests).
        self.node_name: str | None = None
        # When (time.monotonic) the worker should next try to settle runs counted here.
        self.settle_due: float | None = None
        # Set to wake the worker's heartbeat thread early (a first settle deadline, shutdown).
        self.wakeup = threading.Event()
        self._db: TrackingDatabase | None = None
        self._buffer = FlushingBuffer[PendingEvent](self._send)
        self._run_ids: dict[str, str] = {}
        # A forked child (prefork pool) starts with nothing from its parent: the parent sends
        # its own buffered events, and sockets must not be shared.
        os.register_at_fork(after_in_child=self._forget_parent_state)
        atexit.register(self.flush, 5.0)

    def _forget_parent_state(self) -> None:
        self._db = None
        self._buffer = FlushingBuffer[PendingEvent](self._send)
        self._run_ids = {}

    @property
    def db(self) -> TrackingDatabase:
        if self._db is None:
            self._db = TrackingDatabase.from_url(
                self.config.url, prefix=self.config.prefix, timeout=self.config.timeout
            )
        return self._db

    # ---------------------------------------------------------------- run resolution
    def cached(
        self, root_id: str | None, parent_id: str | None, group_id: str | None
    ) -> RunIdentity | None:
        """The run already resolved in this process for the message's root, parent or group
        (a workflow's tasks share its root id; a top-level group's header tasks only share the
        group id). The hot path: callers try it before building a ``TaskMessage`` for ``ask``."""
        cache = self._resolved
        for key in (root_id, parent_id, group_id):
            if key:
                run = cache.get(key)
                if run is not None:
                    return run
        return None

    def resolve(self, message: TaskMessage) -> RunIdentity | None:
        """Run of a message without run headers: the cached run of its root, parent or group,
        else the resolver's answer (see ``ask``)."""
        run = self.cached(message.root_id, message.parent_id, message.group_id)
        return run if run is not None else self.ask(message)

    def ask(self, message: TaskMessage) -> RunIdentity | None:
        """The resolver's answer for a message ``cached`` knows nothing about, remembered under
        its root, group and task ids; None (logged) when the resolver fails."""
        try:
            answer: object = self.resolver(message)
        except Exception:
            logger.exception("merlin_tracking: run resolver failed for task %s", message.id)
            return None
        if answer is not None and not isinstance(answer, RunIdentity):
            logger.warning("merlin_tracking: run resolver returned %r, not a RunIdentity", answer)
            return None
        if answer is not None:
            cache = self._resolved
            for key in (message.root_id, message.group_id, message.id):
                if key:
                    cache[key] = answer
            while len(cache) > _RESOLVED_CAPACITY:
                cache.popitem(last=False)
        return answer

    def message(self, **fields: Any) -> TaskMessage:
        return TaskMessage(app_name=self.app_name, **fields)

    # ---------------------------------------------------------------- hot path
    def record(
        self,
        run: RunIdentity,
        task_id: str,
        kind: TaskEventKind,
        queue: str | None = None,
        name: str | None = None,
        worker: str | None = None,
        error: str | None = None,
        flags: str = "",
        message: str | None = None,
    ) -> None:
        """Queue one task event (stamped with the time now); returns at once."""
        self._buffer.add(
            (run, task_id, kind, queue, name, worker, time.time_ns() // 1000, error, flags, message)
        )
        if kind is TaskEventKind.RECEIVED:
            # The run may complete once the settle time after this receipt has passed (the
            # store's clock starts when the event is applied, a moment later: hence the margin).
            first = self.settle_due is None
            self.settle_due = time.monotonic() + self.config.settle_seconds + _SETTLE_MARGIN
            if first:  # later receipts only move the deadline back: no need to wake for them
                self.wakeup.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Send buffered events now (launch end, worker shutdown, process exit)."""
        try:
            return self._buffer.flush(timeout)
        except Exception:  # never raise into Celery or interpreter shutdown
            logger.exception("merlin_tracking: flushing tracking updates failed")
            return False

    # ---------------------------------------------------------------- background thread
    def remember_run(self, workspace: str, run_id: str) -> None:
        self._run_ids[workspace] = run_id

    def ensure_run(self, run: RunIdentity, queue: str | None) -> str:
        """Id of the run of ``run.workspace``: remembered, else created now (with ``queue`` and
        the identity's fields), else the one another process created first."""
        run_id = self._run_ids.get(run.workspace)
        if run_id is None:
            create = functools.partial(
                self.db.runs.create, run.study, run.workspace, [queue] if queue else []
            )
            try:
                run_id = self._with_fields(run, create).id
            except DuplicateEntityError as exc:
                run_id = exc.existing_id
            self._run_ids[run.workspace] = run_id
        return run_id

    def _with_fields(self, run: RunIdentity, make: Callable[..., Run]) -> Run:
        """``make(**fields)``: a new run with this process's ``task_retention`` and the
        identity's fields, or without the latter (logged) when the store refuses them."""
        retention = self.config.task_retention
        try:
            return make(task_retention=retention, **dict(run.fields))
        except InvalidRecordError as exc:
            if not run.fields:
                raise
            logger.warning("merlin_tracking: run fields of %s refused: %s", run, exc)
            return make(task_retention=retention)

    def _send(self, pending: Sequence[PendingEvent]) -> None:
        identities: dict[str, RunIdentity] = {}
        events: list[TaskEvent] = []
        for run, task_id, kind, queue, name, worker, at, err, flags, kept in pending:
            run_id = self.ensure_run(run, queue)
            identities.setdefault(run_id, run)
            events.append(
                TaskEvent(run_id, task_id, kind, queue, name, worker, at, err, flags, message=kept)
            )
        # The workspaces guard against ids given again after the store lost its data.
        workspaces = {run_id: identity.workspace for run_id, identity in identities.items()}
        missing = set(
            self.db.runs.record_events(coalesce(events), self.config.settle_seconds, workspaces)
        )
        if missing:
            try:
                self._send_recovered(missing, identities, events)
            except StoreUnavailableError as exc:
                # The rest of the batch is applied, so only these go back to the buffer (not
                # the batch, as raising would): sent, their runs created again, once it answers.
                logger.warning("merlin_tracking: could not create vanished runs again: %s", exc)
                for item, event in zip(pending, events, strict=True):
                    if event.run_id in missing:
                        self._buffer.add(item)

    def _send_recovered(
        self, missing: set[str], identities: dict[str, RunIdentity], events: list[TaskEvent]
    ) -> None:
        """The store dropped the events of ``missing`` runs: their records vanished while in
        use (the store lost its data, or they were deleted). Create them again and apply their
        events there, so they count from now on."""
        again = {run_id: self._recover(run_id, identities[run_id], events) for run_id in missing}
        retried = [e._replace(run_id=again[e.run_id]) for e in events if e.run_id in again]
        workspaces = {again[r]: identities[r].workspace for r in missing}
        settle = self.config.settle_seconds
        for run_id in self.db.runs.record_events(coalesce(retried), settle, workspaces):
            logger.warning(
                "merlin_tracking: run %s vanished again; its events were dropped", run_id
            )
            for workspace, cached in list(self._run_ids.items()):
                if cached == run_id:
                    del self._run_ids[workspace]

    def _recover(self, run_id: str, run: RunIdentity, events: Sequence[TaskEvent]) -> str:
        """Id of the run created again for ``run`` (``RunManager.recover``): ``run_id`` when
        free, else the run another process created in its workspace first, marked recovered."""
        runs = self.db.runs
        queues = sorted({e.queue for e in events if e.run_id == run_id and e.queue})
        recover = functools.partial(runs.recover, run_id, run.study, run.workspace, queues)
        try:
            new_id = self._with_fields(run, recover).id
            logger.warning(
                "merlin_tracking: run %s (%s) vanished from the store; created again as %s, "
                "counting from now on",
                run_id,
                run.workspace,
                new_id,
            )
        except DuplicateEntityError as exc:
            new_id = exc.existing_id
            runs.mark_recovered(new_id)
        self._run_ids[run.workspace] = new_id
        return new_id


# Old import paths (``merlin_tracking.signals.tracker.RunIdentity`` and the header names).
__all__ = [
    "RUN_HEADERS",
    "STUDY_HEADER",
    "WORKSPACE_HEADER",
    "PendingEvent",
    "RunIdentity",
    "Tracker",
]
