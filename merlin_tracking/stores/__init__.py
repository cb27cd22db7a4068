"""Stores: how records sit in a backend. ``open_store`` picks one from a URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from merlin_tracking.errors import InvalidRecordError
from merlin_tracking.stores.base import TrackingStore
from merlin_tracking.stores.redis.keys import DEFAULT_PREFIX

REDIS_SCHEMES = ("redis", "rediss", "unix")
SQLITE_SCHEMES = ("sqlite",)


def open_store(url: str, prefix: str = DEFAULT_PREFIX) -> TrackingStore:
    """A store for ``url``: ``redis://``, ``rediss://`` or ``unix://`` for Redis,
    ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` for an SQLite file."""
    scheme = urlsplit(url).scheme
    if scheme in REDIS_SCHEMES:
        from merlin_tracking.stores.redis import RedisStore

        return RedisStore(url, prefix=prefix)
    if scheme in SQLITE_SCHEMES:
        from merlin_tracking.stores.sqlite import SqliteStore

        return SqliteStore(url, prefix=prefix)
    raise InvalidRecordError(
        f"no store for URL scheme {scheme!r}; "
        f"supported: {', '.join(s + '://' for s in (*REDIS_SCHEMES, *SQLITE_SCHEMES))}"
    )


__all__ = ["DEFAULT_PREFIX", "TrackingStore", "open_store"]
