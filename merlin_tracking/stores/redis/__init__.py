"""Redis store: records in hashes, indexes in sets, every write one Lua script."""

from merlin_tracking.stores.redis.store import RedisStore

__all__ = ["RedisStore"]
