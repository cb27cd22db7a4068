"""Worker side: a consumer bootstep that records logical and physical workers.

A consumer step runs for ``celery worker`` and for embedded and test workers alike, with every
pool. When the consumer starts it upserts the logical worker (node name without host + the
queues consumed) and the physical worker (node name, host, pid, command line), and attaches
the logical worker to the active runs of its queues. A daemon thread then heartbeats (a thread,
so a long task in the solo pool cannot starve it) and notices queues added or cancelled at
runtime. Shutdown marks the worker STOPPED with its pid cleared. Nothing here may stop the
worker: every failure is logged and retried on the next heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from celery import bootsteps

from merlin_tracking.records import WorkerStatus
from merlin_tracking.signals.registry import tracker_for
from merlin_tracking.signals.tracker import Tracker

logger = logging.getLogger("merlin_tracking")


def consumed_queues(consumer: Any) -> list[str]:
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = getattr(task_consumer, "queues", None) or []
    return sorted({str(queue.name) for queue in queues if getattr(queue, "name", None)})


def pool_name(pool: Any) -> str | None:
    """The pool as named on the command line (solo, prefork, threads, eventlet, gevent)."""
    if pool is None:
        return None
    name = type(pool).__module__.rsplit(".", 1)[-1]
    return {"thread": "threads"}.get(name, name)


class WorkerSession:
    """The records of one worker process, kept current until it stops."""

    def __init__(self, tracker: Tracker, consumer: Any) -> None:
        self.tracker = tracker
        self.consumer = consumer
        self.node_name = str(consumer.hostname)
        self.physical_id: str | None = None
        self.queues: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def start(self) -> None:
        """Record the worker now (or on a later heartbeat if the store is unreachable)."""
        self.beat()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._heartbeat_loop, name="merlin-tracking-heartbeat", daemon=True
            )
            self._thread.start()

    def _register(self) -> None:
        """Upsert both worker records and attach to the active runs of the queues."""
        queues = consumed_queues(self.consumer)
        if not queues:
            return
        db = self.tracker.db
        logical = db.logical_workers.create(self.node_name.split("@", 1)[0], queues)
        pool = getattr(self.consumer, "pool", None)
        physical = db.physical_workers.create(
            self.node_name,
            host=socket.gethostname(),
            pid=os.getpid(),
            status=WorkerStatus.RUNNING,
            launch_cmd=" ".join(sys.argv),
            args={
                "pool": pool_name(pool),
                "concurrency": getattr(pool, "limit", None),
                "queues": queues,
            },
            logical_worker_id=logical.id,
            stale_after=self.tracker.config.stale_after,
        )
        db.logical_workers.attach_to_active_runs(logical.id)
        self.physical_id, self.queues = physical.id, queues

    def _heartbeat_loop(self) -> None:
        interval = self.tracker.config.heartbeat_interval
        next_beat = time.monotonic() + interval
        wakeup = self.tracker.wakeup
        while True:
            # Sleep until the next heartbeat, or until a run counted here may settle if that
            # comes first (a first receipt wakes the thread to take its deadline into account).
            due = self.tracker.settle_due
            wake = next_beat if due is None else min(next_beat, due)
            wakeup.wait(max(0.0, wake - time.monotonic()))
            wakeup.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            beat_due = now >= next_beat
            if beat_due:
                self.beat()
                next_beat = time.monotonic() + interval
            due = self.tracker.settle_due
            settle_due = due is not None and now >= due
            # Every heartbeat settles too: runs counted at other workers complete even when
            # those workers are gone (no monitor process needed).
            if beat_due or settle_due:
                self.settle(due if settle_due else None)

    def settle(self, due: float | None) -> None:
        """Complete the runs whose settle time has passed (see ``TrackingStore.settle_runs``);
        ``due``: the deadline this call answers, forgotten unless a newer receipt moved it."""
        if due is not None and self.tracker.settle_due == due:
            self.tracker.settle_due = None
        try:
            self.tracker.db.runs.settle()
        except Exception as exc:
            logger.debug("merlin_tracking: settling runs failed: %s", exc)

    def beat(self) -> None:
        """One heartbeat: re-register when queues changed or the record vanished."""
        try:
            if (
                self.physical_id is None
                or consumed_queues(self.consumer) != self.queues
                or not self.tracker.db.physical_workers.heartbeat(self.physical_id)
            ):
                self._register()
            if self._warned:
                logger.warning("merlin_tracking: worker records reachable again")
                self._warned = False
        except Exception as exc:
            if not self._warned:
                logger.warning("merlin_tracking: worker heartbeat failed: %s", exc)
                self._warned = True

    def stop(self) -> None:
        """Worker shutdown: flush task events, then STOPPED with the pid cleared."""
        self._stop.set()
        self.tracker.wakeup.set()
        self.tracker.flush(5.0)
        if self.physical_id is None:
            return
        try:
            self.tracker.db.physical_workers.mark_stopped(self.physical_id)
        except Exception as exc:
            logger.warning("merlin_tracking: could not mark %s stopped: %s", self.node_name, exc)


class TrackingStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: see the module docstring."""

    label = "merlin-tracking"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.session: WorkerSession | None = None

    def start(self, parent: Any) -> None:
        tracker = tracker_for(parent.app)
        if tracker is None:
            return
        if self.session is None:
            self.session = WorkerSession(tracker, parent)
        self.session.start()  # again after a broker reconnect: same pid, so no restart

    def stop(self, parent: Any) -> None:
        # Called on consumer restarts (broker reconnects) too; the worker is still alive.
        pass

    def shutdown(self, parent: Any) -> None:
        if self.session is not None:
            self.session.stop()
            self.session = None
