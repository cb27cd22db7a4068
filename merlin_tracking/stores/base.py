"""The store contract: how records sit in a backend, written down once.

Every method is atomic: it either applies completely or leaves the store as it was, even with
many processes on many hosts writing at once. Relationship changes update both sides in the same
atomic step, so there is never a dangling reference. Managers hold the domain rules (defaults,
validation, lookups by id or name); stores hold the data and its indexes.

Filters reach a store already validated and normalised by the managers: a mapping of filter key
to a non-empty list of string values. Values of one key are OR-ed, keys are AND-ed.
"""

from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from merlin_tracking.errors import InvalidRecordError, StoreError
from merlin_tracking.ids import id_sort_key
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Record,
    Run,
    RunStatus,
    Study,
    Task,
)
from merlin_tracking.records.events import TaskEvent

#: Seconds between the catch-ups that beacons' beats apply for a whole ledger (``beat``).
BEAT_CATCH_UP_EVERY = 1.0

#: Records per ``fetch_many`` when a query is read page by page (``query_pages``).
QUERY_PAGE = 1000

R = TypeVar("R", bound=Record)

#: The key prefix (Redis) or namespace (SQLite) of a ledger when none is given.
DEFAULT_PREFIX = "merlin_tracking"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")


def check_prefix(prefix: object) -> str:
    """``prefix`` if it is a valid ledger prefix: 1-100 characters from letters, digits,
    ``_ . : -`` (no braces, so Redis can wrap it in a Cluster hash tag), on every store."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise InvalidRecordError(
            f"invalid key prefix {prefix!r}: use 1-100 characters from letters, digits, '_', '.', "
            "':' and '-'"
        )
    return prefix


@dataclasses.dataclass(frozen=True)
class DanglingReference:
    """``owner``'s ``field`` names ``missing``, which does not exist."""

    owner_type: str
    owner_id: str
    field: str
    missing: str

    def describe(self) -> str:
        return f"{self.owner_type} {self.owner_id}: {self.field} -> missing {self.missing}"


Filters = Mapping[str, Sequence[str]]


@dataclasses.dataclass(frozen=True)
class CatchUp:
    """What ``TrackingStore.catch_up`` applied."""

    completed: tuple[str, ...] = ()  # runs that completed once their settle time passed
    stalled_workers: tuple[str, ...] = ()  # physical workers found stale (their tasks LOST)

    def __bool__(self) -> bool:
        return bool(self.completed or self.stalled_workers)


class TrackingStore(ABC):
    """Abstract store of studies, runs, logical workers and physical workers."""

    #: Short backend name shown by ``info`` ("redis", "sqlite").
    backend: str = "abstract"
    #: The store's URL with any password masked.
    url: str = ""

    # ------------------------------------------------------------------ writes
    @abstractmethod
    def create_study(self, study: Study) -> tuple[str, bool]:
        """Insert ``study`` unless one with its name exists; return (id, created)."""

    @abstractmethod
    def create_run(self, run: Run, keep_id: bool = False, study: Study | None = None) -> Run:
        """Insert ``run`` into the existing study ``run.study_id`` under a new id; or, given
        ``study``, into the study named ``study.name``, which is created (as ``create_study``)
        if missing, in the same atomic step: one round trip, and a run refused (its
        workspace is taken) creates no study. ``run.study_id`` is then ignored.

        The store assigns run ids from its own sequence (``ids.run_id``), so they sort by
        creation; ``run.id`` is ignored unless ``keep_id``.

        With ``keep_id`` (import) an existing run id raises ``DuplicateEntityError``; otherwise
        a clashing generated id is replaced by a fresh one.

        Atomically: the workspace must be unused (``DuplicateEntityError`` naming the existing
        run otherwise), the run joins its study's ``runs``, and every existing logical worker
        that consumes one of the run's queues is attached (both sides). Returns the stored run.
        Raises ``StudyNotFoundError`` if the study vanished meanwhile.
        """

    @abstractmethod
    def add_run_queues(self, run_id: str, queues: Sequence[str]) -> Run:
        """Add queues to a run and attach the logical workers consuming them; return the run."""

    @abstractmethod
    def create_logical_worker(self, worker: LogicalWorker) -> bool:
        """Insert ``worker`` unless its (deterministic) id exists; return whether it was new."""

    @abstractmethod
    def upsert_physical_worker(
        self, candidate: PhysicalWorker, given: frozenset[str]
    ) -> tuple[PhysicalWorker, str]:
        """Create or update the physical worker named ``candidate.name``.

        New name: store ``candidate`` as is. Known name: set the fields named in ``given`` and the
        heartbeat. If ``candidate.pid`` differs from the stored pid of a worker that had started,
        it is a restart: ``restart_count`` + 1 and pid, host, status and latest_start_time are
        refreshed from ``candidate``. ``candidate.logical_worker_id`` (when set) must exist and
        is linked both ways. Returns the stored worker and "created", "restarted" or "updated".
        """

    @abstractmethod
    def update_fields(
        self,
        record_type: type[Run | PhysicalWorker],
        record_id: str,
        changes: Mapping[str, Any],
    ) -> None:
        """Set plain fields of a run or physical worker, keeping indexes in step. Raises the
        type's not-found error if it is missing."""

    @abstractmethod
    def link_run_worker(self, run_id: str, worker_id: str, linked: bool = True) -> bool:
        """Attach (or detach) a logical worker and a run, both sides; return whether it changed."""

    @abstractmethod
    def apply_task_events(
        self,
        events: Sequence[TaskEvent],
        settle: float = 0.0,
        workspaces: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Apply task events in order, atomically: the task ledger, run counters and status.

        The rules are ``stores/rules.py`` (each task id counts once per counter whatever the
        order of events from different processes; ``tasks_retried`` counts retry events;
        ``tasks_lost`` counts the tasks lost now). Status: see ``rules.next_status``. An event
        flagged COUNTED_AT_WORKER (a task no tracked publisher counted) pushes the run's
        ``settle_until`` to now + ``settle`` seconds; the success of a task flagged ENDS_RUN
        clears it. A published or received queue joins the run's queues and attaches its
        logical workers. Returns ids of runs that do not exist (their events are dropped);
        ``workspaces`` (run id -> the workspace the sender knows it by) counts a run whose
        stored workspace differs as missing too: after a store lost its data, a new run may
        have been given an id that a sender still remembers for another workspace.
        """

    @abstractmethod
    def catch_up(self) -> CatchUp:
        """Apply what time alone made due, so every reader sees it (cheap when nothing is due):
        stale workers are stored STALLED and the tasks they held become LOST; runs whose settle
        time passed are judged again; task records past their run's retention are dropped."""

    def catch_up_before_read(self) -> None:
        """Have the next read of this thread start with ``catch_up`` (best effort: a refused
        catch-up leaves the ledger as it is). A store may fold it into that read's round
        trip; by default it runs now."""
        try:
            self.catch_up()
        except StoreError:
            pass

    @abstractmethod
    def stop_worker(self, worker_id: str, at: datetime) -> PhysicalWorker:
        """A worker shut down: STOPPED with its pid cleared and ``at`` as its last heartbeat;
        tasks it still held become LOST, the runs on its queues are judged again. Raises
        ``WorkerNotFoundError`` if it is missing."""

    @abstractmethod
    def refresh_runs_on_queues(self, queues: Sequence[str]) -> None:
        """Judge again the status of the active runs using these queues (their consumers
        changed: a worker started, stopped or dropped a queue)."""

    # ------------------------------------------------------------------ the task ledger
    @abstractmethod
    def run_tasks(self, run_id: str) -> list[Task]:
        """Every task record of a run, in the order the ledger first saw them (by
        ``created_at``, then id); an empty list for a run without tasks or records."""

    @abstractmethod
    def find_tasks(
        self, filters: Mapping[str, Sequence[str]], limit: int | None = None
    ) -> list[Task]:
        """Task records matching ``filters`` (``run_id``, ``state``, ``name``, ``queue``,
        ``worker``: each a list of accepted values, ``state`` by ``TaskState`` value), by run
        oldest first, then as ``run_tasks`` orders them; at most ``limit``. Indexed: the work
        follows the matching records, not every record of every run."""

    @abstractmethod
    def find_task(self, task_id: str) -> Task | None:
        """The record of task ``task_id`` (in the newest run that has one), else None."""

    @abstractmethod
    def delete_task(self, run_id: str, task_id: str) -> bool:
        """Delete one task record (the run's counters stay); return whether it existed."""

    @abstractmethod
    def take_message(self, run_id: str, task_id: str) -> str | None:
        """The kept message (``tracking_keep_messages``) of a LOST task, removed in the same
        atomic step, so that of any number of concurrent requeues one publishes it; None when
        the task is not LOST or has no kept message."""

    @abstractmethod
    def kept_message_ids(self, run_id: str) -> set[str]:
        """Ids of the run's tasks that have a kept message."""

    @abstractmethod
    def keep_message(self, run_id: str, task_id: str, message: str) -> bool:
        """Keep ``message`` for the task (a requeue that could not publish puts it back);
        False if the run is gone."""

    @abstractmethod
    def change_publishing(self, run_id: str, delta: int) -> RunStatus | None:
        """Add ``delta`` to the run's count of launches in progress; return the new status
        (None if the run is missing). Reaching zero may complete the run."""

    @abstractmethod
    def set_run_status(
        self, run_id: str, status: RunStatus, allowed_from: Sequence[RunStatus]
    ) -> tuple[bool, RunStatus]:
        """Set the status if the current one is in ``allowed_from``; return (changed, old).
        Raises ``RunNotFoundError`` if the run is missing."""

    @abstractmethod
    def attach_worker_to_runs(self, worker_id: str) -> list[str]:
        """Attach a logical worker to every active run consuming one of its queues, and judge
        those runs again (a STALLED run has a consumer now); return the ids newly attached."""

    @abstractmethod
    def heartbeat(self, worker_id: str, at: datetime) -> bool:
        """Record a physical worker's heartbeat and renew its liveness (a worker stored STALLED
        is RUNNING again, and the runs on its queues are judged again); False if it is gone."""

    @abstractmethod
    def migrate(self) -> dict[str, int]:
        """Bring every record of an older release's ledger to the current format now (what
        reads and writes otherwise do as they meet them). Idempotent: a second call changes
        nothing and says so. Returns what was counted and changed, by name."""

    def beat(self, worker_id: str, at: datetime, every: float = BEAT_CATCH_UP_EVERY) -> bool:
        """A beacon's beat: ``heartbeat``, then ``catch_up`` (what time made due), which a
        store may skip when another beat of the ledger applied it within ``every`` seconds,
        so the cost of a beat stays flat however many workers beat. False if it is gone."""
        alive = self.heartbeat(worker_id, at)
        if alive:
            self.catch_up()
        return alive

    @abstractmethod
    def find_dangling(self) -> list[DanglingReference]:
        """References to records that do not exist (none, unless keys were removed by hand or
        by an older version). Reads everything: a maintenance operation."""

    @abstractmethod
    def remove_dangling(self, references: Sequence[DanglingReference]) -> int:
        """Drop the given dangling references; return how many were removed."""

    @abstractmethod
    def delete_runs(self, run_ids: Sequence[str]) -> int:
        """Delete runs, removing them from their study and logical workers; return the count."""

    @abstractmethod
    def delete_study(self, study_id: str, remove_runs: bool) -> bool:
        """Delete a study; its runs are deleted too or kept with ``study_id`` cleared."""

    @abstractmethod
    def delete_logical_workers(self, worker_ids: Sequence[str]) -> int:
        """Delete logical workers, detaching them from their runs and physical workers."""

    @abstractmethod
    def delete_physical_workers(self, worker_ids: Sequence[str]) -> int:
        """Delete physical workers, unlinking them from their logical worker."""

    # ------------------------------------------------------------------ reads
    @abstractmethod
    def fetch(self, record_type: type[R], id_or_key: str) -> R | None:
        """The record whose id is ``id_or_key``, else whose unique field (study name, run
        workspace, physical worker name) equals it, else None. One round trip."""

    @abstractmethod
    def fetch_many(self, record_type: type[R], ids: Sequence[str]) -> list[R]:
        """Records for ``ids`` in the given order; ids that do not exist are skipped."""

    @abstractmethod
    def find_ids(self, record_type: type[Record], filters: Filters) -> list[str]:
        """Ids of the records matching ``filters`` (all records when empty), unordered."""

    @abstractmethod
    def count(self, record_type: type[Record]) -> int:
        """Number of records of a type."""

    @abstractmethod
    def recent_run_ids(self, limit: int) -> list[str]:
        """Ids of the most recently created runs, newest first (cheap, for ``info``)."""

    @abstractmethod
    def server_info(self) -> dict[str, Any]:
        """Backend facts for ``info``: server version, memory and the like."""

    @abstractmethod
    def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the backend answers."""

    def query(self, record_type: type[R], filters: Filters, limit: int | None = None) -> list[R]:
        """Matching records in creation order (oldest first), at most ``limit``."""
        return [
            record
            for page in self.query_pages(record_type, filters, limit=limit)
            for record in page
        ]

    def query_pages(
        self,
        record_type: type[R],
        filters: Filters,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> Iterator[list[R]]:
        """``query``'s records a page (one ``fetch_many``) at a time, so a listing of any size
        holds one page of records in memory."""
        ids = self.find_ids(record_type, filters)
        if record_type is LogicalWorker:
            # Logical worker ids are digests, not time-ordered: order by the records instead
            # (a ledger holds few of them).
            records = self.fetch_many(record_type, ids)
            records.sort(key=lambda rec: (rec.created_at, rec.id))
            yield records[:limit] if limit is not None else records
            return
        ids.sort(key=id_sort_key)
        if limit is not None:
            ids = ids[:limit]
        size = page_size or QUERY_PAGE
        for start in range(0, len(ids), size):
            yield self.fetch_many(record_type, ids[start : start + size])


__all__ = [
    "DEFAULT_PREFIX",
    "CatchUp",
    "DanglingReference",
    "Filters",
    "LogicalWorker",
    "PhysicalWorker",
    "Run",
    "Study",
    "TrackingStore",
    "check_prefix",
]
