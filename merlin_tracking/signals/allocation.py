"""The batch allocation of one worker: what its record says of it, and the drain before its end.

``WorkerSession`` asks this once, when its consumer starts: the allocation comes from the
environment (``merlin_tracking.schedulers``), its end from the environment or one bounded query
of the scheduler, cached per job id, so a task never waits on a scheduler. With
``tracking_drain_before_end``, a timer cancels the worker's own consumers that many seconds
before the end: it takes no new task, and the ones running may finish before the scheduler
kills it. When the worker is told to shut down (the SIGTERM a scheduler sends when it ends a
job early: a cancel, a preemption), the scheduler is asked once more, on a thread of its own,
and an earlier end is recorded, so tasks lost with the worker then name the allocation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from celery import signals

from merlin_tracking import schedulers

logger = logging.getLogger("merlin_tracking")


def cancel_own_queues(consumer: Any, queues: list[str]) -> None:
    """Stop ``consumer`` taking tasks from ``queues``, as the ``cancel_consumer`` control
    command does, in the consumer's own loop."""
    for queue in queues:
        consumer.call_soon(consumer.cancel_task_queue, queue)


class AllocationWatch:
    """The allocation a worker runs in, if any, and its drain timer."""

    def __init__(
        self,
        consumer: Any,
        drain_before_end: float | None,
        record_end: Callable[[datetime], None],
        queues_of: Callable[[Any], list[str]],
    ) -> None:
        self.consumer = consumer
        self.queues_of = queues_of
        self.drain_before_end = drain_before_end
        self.record_end = record_end  # stores a new end on the worker's record
        self.allocation = schedulers.detect()
        self.ends_at: datetime | None = None
        self.drained = threading.Event()
        self._timer: threading.Timer | None = None
        self._started = False

    def start(self) -> None:
        """Learn the end (at most one scheduler query) and arm the drain timer; once."""
        if self._started or self.allocation is None:
            return
        self._started = True
        self.ends_at = schedulers.ends_at(self.allocation)
        self._arm()
        signals.worker_shutting_down.connect(self._shutting_down, weak=False)

    def fields(self) -> dict[str, Any]:
        """The job fields of the worker's record (all None outside an allocation)."""
        found = self.allocation
        return {
            "scheduler": found.scheduler if found else None,
            "job_id": found.job_id if found else None,
            "job_name": found.job_name if found else None,
            "job_nodes": found.nodes if found else None,
            "job_ends_at": self.ends_at,
        }

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.ends_at is None or self.drain_before_end is None:
            return
        now = datetime.now(timezone.utc)
        delay = (self.ends_at - now).total_seconds() - self.drain_before_end
        self._timer = threading.Timer(max(0.0, delay), self.drain)
        self._timer.daemon = True
        self._timer.start()

    def drain(self) -> None:
        """Take no new task: the allocation ends within ``drain_before_end`` seconds."""
        queues = self.queues_of(self.consumer)
        cancel_own_queues(self.consumer, queues)
        self.drained.set()
        logger.warning(
            "merlin_tracking: allocation %s (%s) ends at %s: stopped consuming %s",
            self.allocation.job_id if self.allocation else "?",
            self.allocation.scheduler if self.allocation else "?",
            self.ends_at.isoformat(timespec="seconds") if self.ends_at else "?",
            ", ".join(queues) or "nothing",
        )

    def _shutting_down(self, sender: Any = None, **_: Any) -> None:
        # Called from the worker's signal handler: the query runs on a thread of its own.
        if str(sender) != str(getattr(self.consumer, "hostname", sender)):
            return
        threading.Thread(
            target=self._ask_again, name="merlin-tracking-allocation", daemon=True
        ).start()

    def _ask_again(self) -> None:
        if self.allocation is None:
            return
        try:
            early = schedulers.ended_early(self.allocation)
            if early is not None:
                self.ends_at = early
                self.record_end(early)
        except Exception as exc:
            logger.debug("merlin_tracking: allocation end not refreshed: %s", exc)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._started:
            signals.worker_shutting_down.disconnect(self._shutting_down)
