"""``TrackingDatabase``: one object with the four managers and a generic, type-named API."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from merlin_tracking.errors import DuplicateEntityError, InvalidRecordError, choices
from merlin_tracking.managers import (
    LogicalWorkerManager,
    PhysicalWorkerManager,
    RunManager,
    StudyManager,
    TaskManager,
)
from merlin_tracking.records import LogicalWorker, PhysicalWorker, Record, Run, Study
from merlin_tracking.stores import DEFAULT_PREFIX, TrackingStore, open_store
from merlin_tracking.version import __version__

if TYPE_CHECKING:
    from merlin_tracking.stores.redis.acl import AclRecipe

ENTITY_TYPES = ("study", "run", "logical_worker", "physical_worker")
EXPORT_SCHEMA = "merlin_tracking.export/1"


def _dict_field(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = document.get(name)
    if not isinstance(value, Mapping):
        raise InvalidRecordError(f"export document: {name!r} must be an object")
    return value


def _list_field(document: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    value = document.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InvalidRecordError(f"export document: {name!r} must be a list of objects")
    return value


@dataclasses.dataclass(frozen=True)
class RunDetails:
    """A run with what it refers to: its study (None if detached), its logical workers (in the
    run's order) and their physical workers (by id). What ``runs show`` and ``export`` print."""

    run: Run
    study: Study | None
    logical_workers: tuple[LogicalWorker, ...]
    physical_workers: tuple[PhysicalWorker, ...]


class TrackingDatabase:
    """The ledger of studies, runs and workers in one store."""

    def __init__(self, store: TrackingStore) -> None:
        self.store = store
        self.studies = StudyManager(store)
        self.runs = RunManager(store, self.studies)
        self.logical_workers = LogicalWorkerManager(store)
        self.physical_workers = PhysicalWorkerManager(store)
        self.tasks = TaskManager(store)

    @classmethod
    def from_url(
        cls, url: str, prefix: str = DEFAULT_PREFIX, timeout: float | None = None
    ) -> TrackingDatabase:
        """Open the store at ``url`` (``redis://``, ``rediss://``, ``unix://``,
        ``sqlite:///``) under ``prefix``; ``timeout``: seconds a Redis command may wait for
        the server before ``StoreUnavailableError`` (default 10)."""
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")
        ):
            raise InvalidRecordError(
                f"timeout: must be a positive number of seconds, got {timeout!r}"
            )
        return cls(open_store(url, prefix=prefix, timeout=timeout))

    @staticmethod
    def redis_acl(
        prefix: str = DEFAULT_PREFIX, user: str | None = None, read_only: bool = False
    ) -> AclRecipe:
        """The ``ACL SETUSER`` commands of a Redis user that may run only the commands this
        package sends, on the keys of ``prefix`` only (``read_only``: a viewer, whose writes
        the server refuses); what ``merlin-tracking acl`` prints (docs/storage.md)."""
        from merlin_tracking.stores.redis.acl import recipe  # loaded on use, as open_store does

        return recipe(prefix, user, read_only)

    @property
    def url(self) -> str:
        """The store's URL with any password masked: safe to print."""
        return self.store.url

    def _manager(self, entity_type: str) -> Any:
        managers: dict[str, Any] = {
            "study": self.studies,
            "run": self.runs,
            "logical_worker": self.logical_workers,
            "physical_worker": self.physical_workers,
        }
        try:
            return managers[entity_type]
        except (KeyError, TypeError):
            raise InvalidRecordError(
                f"unknown entity type {entity_type!r}; valid types: {choices(ENTITY_TYPES)}"
            ) from None

    # Generic API, named by entity type as in the reference implementation.
    def create(self, entity_type: str, *args: Any, **kwargs: Any) -> Record:
        record: Record = self._manager(entity_type).create(*args, **kwargs)
        return record

    def get(self, entity_type: str, *args: Any, **kwargs: Any) -> Record:
        record: Record = self._manager(entity_type).get(*args, **kwargs)
        return record

    def get_all(
        self,
        entity_type: str,
        filters: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        records: list[Record] = self._manager(entity_type).get_all(filters, limit=limit)
        return records

    def delete(self, entity_type: str, *args: Any, **kwargs: Any) -> None:
        self._manager(entity_type).delete(*args, **kwargs)

    def delete_all(self, entity_type: str, **kwargs: Any) -> int:
        deleted: int = self._manager(entity_type).delete_all(**kwargs)
        return deleted

    def delete_everything(self) -> int:
        """Delete every record under this store's prefix, and nothing else."""
        return (
            self.runs.delete_all()
            + self.studies.delete_all()
            + self.physical_workers.delete_all()
            + self.logical_workers.delete_all()
        )

    def migrate(self) -> dict[str, int]:
        """Bring a ledger written by an older release to the current format in place, now
        rather than as records are met (``merlin-tracking migrate``); idempotent."""
        return self.store.migrate()

    def run_details(self, run_id_or_workspace: str) -> RunDetails:
        """The run with this id or workspace and the records it refers to, read once for every
        view of a run (``RunNotFoundError`` if there is none). References that vanished
        meanwhile are left out."""
        run = self.runs.get(run_id_or_workspace)
        study = self.studies.find(run.study_id)
        logical = self.logical_workers.get_many(run.workers)
        physical_ids = sorted({pw for worker in logical for pw in worker.physical_workers})
        physical = self.physical_workers.get_many(physical_ids)
        return RunDetails(run, study, tuple(logical), tuple(physical))

    # ------------------------------------------------------------------ export / import
    def export_run(self, run_id_or_workspace: str) -> dict[str, Any]:
        """A JSON-ready document of a run with its study and workers (see ``import_run``)."""
        details = self.run_details(run_id_or_workspace)
        return {
            "schema": EXPORT_SCHEMA,
            "exported_at": datetime.now(timezone.utc).isoformat(),
            "run": details.run.to_dict(),
            "study": details.study.to_dict() if details.study else None,
            "logical_workers": [worker.to_dict() for worker in details.logical_workers],
            "physical_workers": [worker.to_dict() for worker in details.physical_workers],
        }

    def import_run(self, document: Mapping[str, Any]) -> Run:
        """Restore a run exported by ``export_run``, with its id, counters and links.

        The study is matched by name (created if missing); workers that already exist are
        kept as they are. Raises ``DuplicateEntityError`` if the run id or workspace is taken
        and ``InvalidRecordError`` for a malformed document (nothing is written then).
        """
        if not isinstance(document, Mapping) or document.get("schema") != EXPORT_SCHEMA:
            raise InvalidRecordError(
                f"not a merlin_tracking export (expected schema {EXPORT_SCHEMA!r})"
            )
        run = Run.from_dict(_dict_field(document, "run"))
        if not run.workspace:
            raise InvalidRecordError("export document: the run has an empty workspace")
        study_doc = document.get("study")
        if study_doc is not None and not isinstance(study_doc, Mapping):
            raise InvalidRecordError("export document: 'study' must be an object or null")
        study = Study.from_dict({**study_doc, "runs": []}) if study_doc else None
        logical = [
            LogicalWorker.from_dict({**doc, "runs": [], "physical_workers": []})
            for doc in _list_field(document, "logical_workers")
        ]
        physical = [
            PhysicalWorker.from_dict(doc) for doc in _list_field(document, "physical_workers")
        ]
        existing = self.store.fetch(Run, run.id)
        if existing is not None or self.store.fetch(Run, run.workspace) is not None:
            found = existing or self.runs.get(run.workspace)
            raise DuplicateEntityError("run", "id or workspace", run.workspace, found.id)
        study_id = None
        if study is not None:
            study_id, _ = self.store.create_study(study)
        for worker in logical:
            self.store.create_logical_worker(worker)
        for pw in physical:
            if self.store.fetch(PhysicalWorker, pw.name) is None:
                given = frozenset(pw.CODECS) - {"created_at", "name"}
                self.store.upsert_physical_worker(pw, given)
        if study_id is None:
            study_id = self.studies.ensure_id(f"imported-{run.id}")
        restored = self.store.create_run(run.replace(study_id=study_id), keep_id=True)
        for worker_id in run.workers:
            if self.store.fetch(LogicalWorker, worker_id) is not None:
                self.store.link_run_worker(restored.id, worker_id)
        return self.runs.get(restored.id)

    # ------------------------------------------------------------------ maintenance
    def collect_garbage(self, older_than: timedelta, dry_run: bool = False) -> dict[str, list[str]]:
        """Remove what no longer serves: physical workers STOPPED or STALLED for longer than
        ``older_than`` (by their last heartbeat), logical workers left with no runs and no
        physical workers, and dangling references. Returns what was (or would be) removed."""
        cutoff = datetime.now(timezone.utc) - older_than
        gone = [
            pw
            for pw in self.physical_workers.get_all({"status": ["stopped", "stalled"]})
            if (pw.heartbeat_timestamp or pw.created_at) < cutoff
        ]
        gone_ids = {pw.id for pw in gone}
        idle = [
            lw
            for lw in self.logical_workers.get_all()
            if not lw.runs and not set(lw.physical_workers) - gone_ids
        ]
        dangling = self.store.find_dangling()
        if not dry_run:
            self.store.delete_physical_workers(sorted(gone_ids))
            self.store.delete_logical_workers([lw.id for lw in idle])
            self.store.remove_dangling(dangling)
        return {
            "physical_workers": [pw.id for pw in gone],
            "logical_workers": [lw.id for lw in idle],
            "dangling": [ref.describe() for ref in dangling],
        }

    def info(self, recent: int = 5) -> dict[str, Any]:
        """Counts per type, backend facts, package version and the newest records."""
        recent_runs = self.store.fetch_many(Run, self.store.recent_run_ids(recent))
        study_ids = sorted(self.store.find_ids(Study, {}))
        recent_studies = self.store.fetch_many(Study, study_ids[::-1][:recent])
        return {
            "version": __version__,
            "backend": self.store.backend,
            "url": self.store.url,
            "server": self.store.server_info(),
            "counts": {
                "study": len(study_ids),
                "run": self.store.count(Run),
                "logical_worker": self.store.count(LogicalWorker),
                "physical_worker": self.store.count(PhysicalWorker),
            },
            "recent_runs": [run.to_dict() for run in recent_runs],
            "recent_studies": [study.to_dict() for study in recent_studies],
        }
