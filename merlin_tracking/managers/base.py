"""Behaviour shared by the four managers: filtered listing and lookups that raise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from merlin_tracking.errors import EntityNotFoundError, InvalidRecordError
from merlin_tracking.managers.filters import check_limit, normalise_filters
from merlin_tracking.records import Record
from merlin_tracking.stores.base import TrackingStore

R = TypeVar("R", bound=Record)


def require_text(what: str, value: Any) -> str:
    """``value`` if it is a non-empty string, else a typed error naming ``what``."""
    if not isinstance(value, str) or not value:
        raise InvalidRecordError(f"{what} must be a non-empty string, got {value!r}")
    return value


class Manager(Generic[R]):
    record_type: type[R]
    not_found: type[EntityNotFoundError]

    def __init__(self, store: TrackingStore) -> None:
        self.store = store

    def _fetch(self, id_or_key: str) -> R:
        require_text(f"{self.record_type.ENTITY} identifier", id_or_key)
        try:
            id_or_key.encode("utf-8")
        except UnicodeEncodeError:  # no stored name or id can hold a lone surrogate
            raise self.not_found(id_or_key) from None
        record = self.store.fetch(self.record_type, id_or_key)
        if record is None:
            raise self.not_found(id_or_key)
        return record

    def get_all(
        self, filters: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[R]:
        """Records matching ``filters`` (see ``managers.filters``), oldest first."""
        normalised = normalise_filters(self.record_type.ENTITY, filters)
        return self.store.query(self.record_type, normalised, check_limit(limit))

    def count(self) -> int:
        return self.store.count(self.record_type)
