"""Stores: how records sit in a backend. ``open_store`` picks one from a URL."""

from __future__ import annotations

from merlin_tracking.errors import InvalidRecordError
from merlin_tracking.stores.base import DEFAULT_PREFIX, TrackingStore, check_prefix
from merlin_tracking.urls import REDIS_SCHEMES, SQLITE_SCHEMES, scheme_of, supported_schemes


def open_store(
    url: str, prefix: str = DEFAULT_PREFIX, timeout: float | None = None
) -> TrackingStore:
    """A store for ``url``: ``redis://``, ``rediss://`` or ``unix://`` for Redis,
    ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` for an SQLite file.
    ``timeout``: seconds a Redis command may wait for the server (SQLite waits for its lock
    as long as its busy timeout)."""
    scheme = scheme_of(url)
    if scheme in REDIS_SCHEMES:
        from merlin_tracking.stores.redis import RedisStore

        return RedisStore(url, prefix=prefix, timeout=timeout)
    if scheme in SQLITE_SCHEMES:
        from merlin_tracking.stores.sqlite import SqliteStore

        return SqliteStore(url, prefix=prefix)
    raise InvalidRecordError(
        f"no store for URL scheme {scheme!r}; supported: {supported_schemes()}"
    )


__all__ = ["DEFAULT_PREFIX", "TrackingStore", "check_prefix", "open_store"]
