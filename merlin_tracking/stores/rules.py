"""The task and run rules, in Python: the SQLite store applies them as they are; the Redis
scripts (``stores/redis/lua/lib/ledger.lua`` and ``status.lua``) are their Lua twin, and
``tests/stores/test_stores_agree.py`` feeds both the same random event sequences.

Task state letters are those of ``records.task``. Events of one process arrive in order;
events of different processes (publisher, worker main process, pool child) interleave, so every
kind is accepted in every state, and each task counts once per counter:

* first sight of a task id counts it queued (``q``);
* ``started``/``ran`` is one more attempt; the first one counts the task started (so does a
  retry, success or failure of a task whose start was never reported: it ran);
* a task enters a final state (``S``, ``F``, ``R``) once, from any unfinished state, and never
  leaves it; a late start of a revoked task is still counted as a start;
* ``lost`` takes a received or started task to ``L``; anything that shows it alive again
  (a receipt, a start, a retry, its end, a new publish) takes it out, so a redelivered task is
  never counted twice and ``tasks_lost`` counts the tasks lost now;
* a receipt of a started task moves it back to ``c`` only if it is a new delivery (another
  worker, or after its start): the main process's receipt may arrive after the child's start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from merlin_tracking.records.events import COUNTED_AT_WORKER, ENDS_RUN, TaskEvent, TaskEventKind

UNFINISHED = frozenset("qcsrL")
FINAL_LETTER = {
    TaskEventKind.SUCCEEDED: "S",
    TaskEventKind.FAILED: "F",
    TaskEventKind.REVOKED: "R",
}
FINAL_COUNTER = {"S": "succeeded", "F": "failed", "R": "revoked"}
IN_FLIGHT = frozenset("cs")
WAITING = frozenset("qr")
# Kinds that show a task ran although its start was never reported.
_IMPLY_START = frozenset({TaskEventKind.RETRIED, TaskEventKind.SUCCEEDED, TaskEventKind.FAILED})
ACTIVE = frozenset({"INITIALIZED", "QUEUED", "RUNNING", "STALLED"})
# Kinds whose queue joins the run's queues (and attaches the workers consuming it).
JOINS_QUEUE = frozenset({TaskEventKind.PUBLISHED, TaskEventKind.RECEIVED, TaskEventKind.RETRIED})


@dataclasses.dataclass
class TaskRow:
    """One task of the ledger while events are applied (times in microseconds)."""

    state: str = "q"
    attempts: int = 0
    name: str | None = None
    queue: str | None = None
    worker: str | None = None
    queued_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    error: str | None = None


@dataclasses.dataclass
class RunTally:
    """What a batch changes in one run besides its tasks."""

    counters: dict[str, int]
    started_at: int | None = None
    last_finish: int | None = None
    settle: bool = False  # push settle_until back (tasks counted at a worker)
    ends: bool = False  # a task whose success ends the run succeeded: no settle wait

    def bump(self, counter: str, by: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + by


def _target(row: TaskRow, event: TaskEvent) -> str:
    """The state ``event`` takes ``row`` to (the same state when it changes nothing)."""
    old, kind = row.state, event.kind
    if kind is TaskEventKind.PUBLISHED:
        return "q" if old == "L" else old
    if kind is TaskEventKind.RECEIVED:
        if old in ("q", "r", "L", "c"):
            return "c"
        if old == "s":
            new_delivery = event.worker != row.worker or (
                event.at is not None and row.started_at is not None and event.at > row.started_at
            )
            return "c" if new_delivery else "s"
        return old
    if kind in (TaskEventKind.STARTED, TaskEventKind.RAN):
        return "s" if old in UNFINISHED else old
    if kind is TaskEventKind.RETRIED:
        return "r" if old in UNFINISHED else old
    if kind is TaskEventKind.LOST:
        return "L" if old in IN_FLIGHT else old
    return FINAL_LETTER[kind] if old in UNFINISHED else old


def apply_event(row: TaskRow | None, event: TaskEvent, tally: RunTally, now: int) -> TaskRow:
    """``row`` after ``event`` (a new row on first sight), with the run's changes in ``tally``."""
    at = event.at if event.at is not None else now
    new_task = row is None
    if row is None:
        row = TaskRow(queued_at=at)
        tally.bump("queued")
    if event.name and not row.name:
        row.name = event.name
    if event.queue and not row.queue:
        row.queue = event.queue
    kind = event.kind
    if kind in (TaskEventKind.STARTED, TaskEventKind.RAN):
        row.attempts += 1
        if row.attempts == 1:
            tally.bump("started")
        row.started_at = at
        tally.started_at = at if tally.started_at is None else min(tally.started_at, at)
        if kind is TaskEventKind.RAN:
            _change(row, _target(row, event), event, tally, at)
            kind = TaskEventKind.SUCCEEDED
            at = event.ended if event.ended is not None else at
            event = event._replace(kind=kind, at=at)
    new = _target(row, event)
    if kind in _IMPLY_START and new != row.state and row.attempts == 0:
        row.attempts = 1
        tally.bump("started")
        tally.started_at = at if tally.started_at is None else min(tally.started_at, at)
    if kind is TaskEventKind.RETRIED:
        tally.bump("retried")
    _change(row, new, event, tally, at)
    if COUNTED_AT_WORKER in event.flags and (new_task or kind is TaskEventKind.RECEIVED):
        tally.settle = True
    if ENDS_RUN in event.flags and row.state == "S":
        tally.ends = True
    return row


def _change(row: TaskRow, new: str, event: TaskEvent, tally: RunTally, at: int) -> None:
    old = row.state
    if new in IN_FLIGHT and event.worker:
        row.worker = event.worker
    if new == old:
        return
    if old == "L":
        tally.bump("lost", -1)
    if new == "L":
        tally.bump("lost")
        row.error = event.error
    if new in FINAL_COUNTER:
        tally.bump(FINAL_COUNTER[new])
        row.finished_at = at
        tally.last_finish = at if tally.last_finish is None else max(tally.last_finish, at)
        if new == "F":
            row.error = event.error
    row.state = new


# ------------------------------------------------------------------------------- run status
@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What a run's status is judged on (times in microseconds)."""

    status: str
    counters: dict[str, int]
    publishing: int
    settle_until: int | None
    in_flight: int
    waiting_queues: Iterable[str | None]  # queues of its queued and retrying tasks


def next_status(facts: RunFacts, now: int, covered: Callable[[str | None], bool]) -> str:
    """The status the run's counters and liveness give it.

    FAILED on a failure; COMPLETED once every counted task finished without failure, no launch
    is publishing and the settle time has passed; STALLED when work is left and nothing can
    progress it (nothing in flight, no launch publishing, and no live worker consumes a queue
    its waiting tasks are on: ``covered``); else RUNNING once a task started, else QUEUED once
    one is counted. FAILED and CANCELLED are never left; COMPLETED only to take in new tasks.
    """
    n = facts.counters.get
    old = facts.status
    queued, finished = n("queued", 0), n("succeeded", 0) + n("revoked", 0)
    reopened = old == "COMPLETED" and finished < queued
    if old not in ACTIVE and not reopened:
        return old
    if n("failed", 0) > 0:
        return "FAILED"
    if queued > 0 and facts.publishing <= 0 and finished >= queued:
        if facts.settle_until is None or facts.settle_until <= now:
            return "COMPLETED"
    elif (
        queued - finished > 0
        and facts.publishing <= 0
        and facts.in_flight <= 0
        and not any(covered(queue) for queue in set(facts.waiting_queues))
    ):
        return "STALLED"
    if n("started", 0) > 0:
        return "RUNNING"
    if queued > 0:
        return "QUEUED"
    return old


def is_active(status: str) -> bool:
    return status in ACTIVE


__all__ = [
    "ACTIVE",
    "IN_FLIGHT",
    "JOINS_QUEUE",
    "UNFINISHED",
    "WAITING",
    "RunFacts",
    "RunTally",
    "TaskRow",
    "apply_event",
    "is_active",
    "next_status",
]
