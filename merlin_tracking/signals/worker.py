"""Worker side: a consumer bootstep that records logical and physical workers.

A consumer step runs for ``celery worker`` and for embedded and test workers alike, with every
pool. When the consumer starts it upserts the logical worker (``logical_name``: the node name
without its host, plus the queues consumed) and the physical worker (node name, host, pid,
command line), and attaches the logical worker to the active runs of its queues. A beacon
process (``merlin_tracking.beacon``) then heartbeats for it, so a task holding the GIL cannot
make a live worker read STALLED, and applies what time made due in the ledger; a daemon
thread notices queues added or cancelled at runtime, wakes when a run counted here may settle,
and beats itself if the beacon cannot run. When the worker has shut down (Celery shuts the
consumer down after the pool stopped) it is marked STOPPED with its pid cleared, and tasks it
still held are LOST. Nothing here may stop the worker: every failure is
logged and retried on the next heartbeat.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

from celery import bootsteps

from merlin_tracking.records import WorkerStatus
from merlin_tracking.signals.allocation import AllocationWatch
from merlin_tracking.signals.registry import tracker_for
from merlin_tracking.signals.tracker import Tracker
from merlin_tracking.urls import mask_url

logger = logging.getLogger("merlin_tracking")

# Host parts Celery puts after a node name's first dot (``-n name.%h``), or leaves unexpanded
# when the ``%`` was escaped (Merlin passes ``-n name.%%h``).
_HOST_PLACEHOLDERS = frozenset({"%h", "%n", "%d"})
# The stamp Merlin appends to a worker's name when its spec sets ``merlin.resources.overlap``
# (``-n <name><YYYYmmdd-HHMMSS>.%%h``), so that each launch gets a node name of its own.
_OVERLAP_STAMP = re.compile(r"\d{8}-\d{6}$")


def logical_name(node_name: str, host: str) -> str:
    """The logical worker a node name stands for: the part before ``@`` (``sim@node7`` ->
    ``sim``). A name given without ``@`` gets Celery's ``celery@`` in front; for the common
    ``-n <name>.%h`` form (``celery@<name>.<host>``, as Merlin starts its workers) that is
    ``<name>``, the name Merlin's own database uses, without the launch stamp Merlin adds
    under ``overlap: true`` (``celery@sim20240101-120000.%h`` -> ``sim``): the launches are
    physical workers of one logical worker. ``celery@<host>`` stays ``celery``."""
    name, at, rest = node_name.partition("@")
    if not at:
        return node_name
    if name == "celery":
        first, dot, tail = rest.partition(".")
        hosts = {host, host.split(".", 1)[0], socket.getfqdn()}
        if first and dot and (tail in _HOST_PLACEHOLDERS or tail in hosts):
            return _OVERLAP_STAMP.sub("", first) or first
    return name


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


def describe(tracker: Tracker) -> str:
    """One line for the worker's start-up log: where the ledger is and what is tracked."""
    config = tracker.config
    what = getattr(tracker.resolver, "description", None) or "run headers, then the resolver"
    return (
        f"merlin_tracking: ledger {mask_url(config.url)} (prefix {config.prefix}); run "
        f"resolver {config.run_resolver!r}: {what}"
    )


class Beacon:
    """The heartbeat process of one worker (see ``merlin_tracking.beacon``)."""

    def __init__(self, tracker: Tracker, worker_id: str) -> None:
        config = tracker.config
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "merlin_tracking.beacon"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
        )
        assert self.proc.stdin is not None
        handoff = {
            "url": config.url,
            "prefix": config.prefix,
            "worker_id": worker_id,
            "interval": config.heartbeat_interval,
            "parent": os.getpid(),
        }
        self.proc.stdin.write(json.dumps(handoff).encode() + b"\n")
        self.proc.stdin.flush()
        self.worker_id = worker_id

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # end of its stdin: it exits
            self.proc.wait(5)
        except Exception:
            self.proc.kill()


class WorkerSession:
    """The records of one worker process, kept current until it stops."""

    def __init__(self, tracker: Tracker, consumer: Any) -> None:
        self.tracker = tracker
        self.consumer = consumer
        self.node_name = str(consumer.hostname)
        self.physical_id: str | None = None
        self.queues: list[str] = []
        self.beacon: Beacon | None = None
        self._stop = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._warned = False
        self.allocation = AllocationWatch(
            consumer, tracker.config.drain_before_end, self._record_end, consumed_queues
        )

    def start(self) -> None:
        """Record the worker now (or on a later heartbeat if the store is unreachable)."""
        self.allocation.start()
        self.beat()
        if self._thread is None:
            logger.info(describe(self.tracker))
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
        host = socket.gethostname()
        logical = db.logical_workers.create(logical_name(self.node_name, host), queues)
        pool = getattr(self.consumer, "pool", None)
        physical = db.physical_workers.create(
            self.node_name,
            host=host,
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
            **self.allocation.fields(),
        )
        db.logical_workers.attach_to_active_runs(logical.id)
        dropped = sorted(set(self.queues) - set(queues))
        if dropped:  # runs waiting there may have lost their last live consumer
            db.runs.refresh_queues(dropped)
        self.physical_id, self.queues = physical.id, queues
        self._start_beacon(physical.id)

    def _start_beacon(self, worker_id: str) -> None:
        if self.beacon is not None and self.beacon.alive and self.beacon.worker_id == worker_id:
            return
        if self.beacon is not None:
            self.beacon.stop()
        try:
            self.beacon = Beacon(self.tracker, worker_id)
        except Exception as exc:  # no beacon: this thread beats instead
            self.beacon = None
            logger.warning("merlin_tracking: heartbeat process did not start: %s", exc)

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
            if due is not None and now >= due:
                self.catch_up(due)

    def catch_up(self, due: float | None) -> None:
        """Apply what time made due (``TrackingStore.catch_up``): here, runs counted at this
        worker whose settle time passed. ``due``: the deadline this call answers, forgotten
        unless a newer receipt moved it."""
        if due is not None and self.tracker.settle_due == due:
            self.tracker.settle_due = None
        try:
            self.tracker.db.runs.catch_up()
        except Exception as exc:
            logger.debug("merlin_tracking: catching up failed: %s", exc)

    def beat(self) -> None:
        """One look at the worker: re-register when queues changed or its records vanished;
        heartbeat and catch up here when the beacon is not running."""
        try:
            beacon_beats = self.beacon is not None and self.beacon.alive
            if (
                self.physical_id is None
                or consumed_queues(self.consumer) != self.queues
                or not self._recorded(self.physical_id, beacon_beats)
            ):
                self._register()
            elif not beacon_beats:
                self.tracker.db.runs.catch_up()
            if self._warned:
                logger.warning("merlin_tracking: worker records reachable again")
                self._warned = False
        except Exception as exc:
            if not self._warned:
                logger.warning("merlin_tracking: worker heartbeat failed: %s", exc)
                self._warned = True

    def _recorded(self, physical_id: str, beacon_beats: bool) -> bool:
        """Whether both worker records are still stored (a store restarted empty, or a
        deletion, loses them): the physical one and the logical one it belongs to. Without
        the beacon this is the heartbeat too."""
        physical = self.tracker.db.physical_workers
        if not beacon_beats and not physical.heartbeat(physical_id):
            return False
        record = physical.find(physical_id)
        return record is not None and record.logical_worker_id is not None

    def _record_end(self, ends_at: datetime) -> None:
        """The scheduler moved the allocation's end (it ends the job early)."""
        if self.physical_id is not None:
            self.tracker.db.physical_workers.update(self.physical_id, job_ends_at=ends_at)

    def stop(self) -> None:
        """The worker has shut down: flush task events, end the beats, then STOPPED with the
        pid cleared (tasks it still held become LOST). Runs once."""
        if self._stopped:
            return
        self._stopped = True
        self.allocation.stop()
        self._stop.set()
        self.tracker.wakeup.set()
        self.tracker.flush(5.0)
        if self.beacon is not None:
            self.beacon.stop()
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
        tracker = tracker_for(parent.app)
        if tracker is not None:  # before the pool forks: its processes know their worker
            tracker.node_name = str(parent.hostname)

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
        # Celery shuts the consumer down once every worker step stopped: after a warm
        # shutdown's running tasks finished (the pool has stopped), at once after a cold one.
        if self.session is not None:
            self.session.stop()
            self.session = None
