"""Behaviour shared by the four managers: filtered listing and lookups (raising or not)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeGuard, TypeVar

from merlin_tracking.errors import EntityNotFoundError, InvalidRecordError
from merlin_tracking.managers.filters import check_limit, is_unicode, normalise_filters
from merlin_tracking.records import Record
from merlin_tracking.stores.base import TrackingStore

R = TypeVar("R", bound=Record)


def require_text(what: str, value: Any) -> str:
    """``value`` if it is a non-empty string, else a typed error naming ``what``."""
    if not isinstance(value, str) or not value:
        raise InvalidRecordError(f"{what} must be a non-empty string, got {value!r}")
    return value


def can_name_a_record(value: object) -> TypeGuard[str]:
    """Whether ``value`` could be a stored id or key: a non-empty string that is valid Unicode.
    No stored id or name is empty or holds a lone surrogate, so anything else names nothing."""
    return isinstance(value, str) and bool(value) and is_unicode(value)


class Manager(Generic[R]):
    record_type: type[R]
    not_found: type[EntityNotFoundError]
    #: Whether what this manager reads can change with time alone (runs: settling, lost work).
    catches_up: bool = False

    def __init__(self, store: TrackingStore) -> None:
        self.store = store

    def _fresh(self) -> None:
        # Every reader sees stale workers' tasks LOST and settled runs COMPLETED, with no
        # monitor process: what time alone made due is applied before the read.
        if self.catches_up:
            self.store.catch_up_before_read()

    def _fetch(self, id_or_key: str) -> R:
        require_text(f"{self.record_type.ENTITY} identifier", id_or_key)
        record = self.find(id_or_key)
        if record is None:
            raise self.not_found(id_or_key)
        return record

    def find(self, id_or_key: str | None) -> R | None:
        """The record with this id (else this unique key: study name, run workspace, node
        name), or None: for callers to whom "missing" is an answer, not an error. None, an
        empty string or a lone surrogate names nothing (``get`` raises instead)."""
        if not can_name_a_record(id_or_key):
            return None
        self._fresh()
        return self.store.fetch(self.record_type, id_or_key)

    def get_many(self, ids: Iterable[str]) -> list[R]:
        """The records of ``ids`` in the given order, read together rather than one lookup per
        id; ids with no record are skipped, so a list of references read a moment ago (a
        study's runs, a worker's processes) resolves as is even if some were deleted since."""
        self._fresh()
        return self.store.fetch_many(self.record_type, [i for i in ids if can_name_a_record(i)])

    def get_all(
        self, filters: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[R]:
        """Records matching ``filters`` (see ``managers.filters``), oldest first."""
        normalised = normalise_filters(self.record_type.ENTITY, filters)
        limit = check_limit(limit)
        self._fresh()
        return self.store.query(self.record_type, normalised, limit)

    def iter_all(
        self, filters: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> Iterator[R]:
        """``get_all``, streamed: the same records in the same order, read a page at a time,
        so listing 100,000 runs holds one page in memory. Filters are checked at once; the
        records are read as the iterator is consumed."""
        normalised = normalise_filters(self.record_type.ENTITY, filters)
        limit = check_limit(limit)
        self._fresh()
        pages = self.store.query_pages(self.record_type, normalised, limit)

        def records() -> Iterator[R]:
            for page in pages:
                yield from page

        return records()

    def count(self) -> int:
        return self.store.count(self.record_type)
