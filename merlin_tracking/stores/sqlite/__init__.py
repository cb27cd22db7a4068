"""The SQLite store: the embedded default, safe for many processes on one machine."""

from merlin_tracking.stores.sqlite.connection import path_from_url
from merlin_tracking.stores.sqlite.schema import SCHEMA_VERSION
from merlin_tracking.stores.sqlite.store import SqliteStore

__all__ = ["SCHEMA_VERSION", "SqliteStore", "path_from_url"]
