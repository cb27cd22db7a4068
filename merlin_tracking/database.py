"""``TrackingDatabase``: one object with the four managers and a generic, type-named API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merlin_tracking import __version__
from merlin_tracking.errors import InvalidRecordError, choices
from merlin_tracking.managers import (
    LogicalWorkerManager,
    PhysicalWorkerManager,
    RunManager,
    StudyManager,
)
from merlin_tracking.records import LogicalWorker, PhysicalWorker, Record, Run, Study
from merlin_tracking.stores import DEFAULT_PREFIX, TrackingStore, open_store

ENTITY_TYPES = ("study", "run", "logical_worker", "physical_worker")


class TrackingDatabase:
    """The ledger of studies, runs and workers in one store."""

    def __init__(self, store: TrackingStore) -> None:
        self.store = store
        self.studies = StudyManager(store)
        self.runs = RunManager(store, self.studies)
        self.logical_workers = LogicalWorkerManager(store)
        self.physical_workers = PhysicalWorkerManager(store)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX) -> TrackingDatabase:
        """Open the store at ``url`` (``redis://``, ``rediss://``) under ``prefix``."""
        return cls(open_store(url, prefix=prefix))

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
