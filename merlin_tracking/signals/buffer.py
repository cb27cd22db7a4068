"""A bounded, per-process buffer of tracking writes, flushed by a background thread.

Task hooks only append here, so a task never waits on Redis. The flusher sends what has
accumulated in order (so the events of one process are applied in the order they happened),
keeps it when Redis is unreachable, logs one warning per outage, and retries until Redis is
back. When the buffer is full the oldest entries are dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from merlin_tracking.errors import StoreUnavailableError

T = TypeVar("T")

logger = logging.getLogger("merlin_tracking")

DEFAULT_CAPACITY = 100_000
BATCH_SIZE = 500


class FlushingBuffer(Generic[T]):
    """Collects items and hands them in batches to ``send`` from a daemon thread."""

    def __init__(
        self,
        send: Callable[[Sequence[T]], None],
        interval: float = 0.05,
        capacity: int = DEFAULT_CAPACITY,
        name: str = "merlin-tracking-flusher",
    ) -> None:
        self._send = send
        self._interval = interval
        self._items: deque[T] = deque(maxlen=capacity)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._name = name
        self._closed = False
        self.outage_since: float | None = None

    # ---------------------------------------------------------------- producer side
    def add(self, item: T) -> None:
        """Queue ``item``; never blocks (deque appends are atomic, so no lock on this path)."""
        items = self._items
        items.append(item)  # a full deque drops its oldest item
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._start_locked()
        if len(items) >= BATCH_SIZE:
            self._wake.set()

    def __len__(self) -> int:
        return len(self._items) + self._in_flight

    def _start_locked(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- flushing
    def flush(self, timeout: float = 5.0) -> bool:
        """Send everything queued now; return True when the buffer is empty in time."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                while self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._idle.wait(remaining)
                if not self._items:
                    return True
            if not self._flush_once() or time.monotonic() > deadline:
                return not len(self)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush and stop the thread."""
        done = self.flush(timeout)
        self._closed = True
        self._wake.set()
        return done

    def _loop(self) -> None:
        backoff = self._interval
        while not self._closed:
            self._wake.wait(backoff)
            self._wake.clear()
            backoff = self._interval if self._flush_once() else min(max(backoff * 2, 0.5), 5.0)

    def _flush_once(self) -> bool:
        """Send one batch; False if the store could not be reached (items kept)."""
        with self._lock:
            if self._in_flight or not self._items:
                return True
            batch = [self._items.popleft() for _ in range(min(BATCH_SIZE, len(self._items)))]
            self._in_flight = len(batch)
        try:
            self._send(batch)
        except StoreUnavailableError as exc:
            self._requeue(batch)
            self._note_outage(exc)
            return False
        except Exception:
            # A bug or a record the store refuses must not wedge the buffer: drop the batch.
            logger.exception(
                "merlin_tracking: dropping %d tracking updates after an error", len(batch)
            )
            self._finish()
            return True
        self._finish()
        if self.outage_since is not None:
            logger.warning(
                "merlin_tracking: store reachable again after %.0f s; buffered updates sent",
                time.monotonic() - self.outage_since,
            )
            self.outage_since = None
        return True

    def _requeue(self, batch: list[T]) -> None:
        with self._lock:
            room = self._capacity - len(self._items)
            keep = batch[-room:] if room < len(batch) else batch
            self._items.extendleft(reversed(keep))
            self._in_flight = 0
            self._idle.notify_all()

    def _finish(self) -> None:
        with self._lock:
            self._in_flight = 0
            self._idle.notify_all()

    def _note_outage(self, exc: Exception) -> None:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            logger.warning(
                "merlin_tracking: %s; tasks keep running, tracking updates are buffered "
                "(up to %d) and sent when the store is back",
                exc,
                self._capacity,
            )
