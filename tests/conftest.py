"""Shared fixtures: a private Redis server for the whole session, a fresh key prefix per test.

Tests never touch data they did not create: by default the session starts its own
``redis-server`` on a free port (it must be installed; ``scripts/test.sh`` installs it). Set
``MERLIN_TRACKING_TEST_REDIS_URL`` to use an existing, disposable server instead.

``db`` is the store contract fixture: every test using it runs once per store (``[redis]`` and
``[sqlite]``, a fresh file per test), so the two stores cannot drift apart. Tests about Redis
itself (key layout, Lua, TLS, round trips) use ``redis_db``. A test that also talks to Redis
directly (it needs ``redis_url`` or ``raw_redis``, e.g. through Celery workers using Redis) gets
the Redis store as ``db`` only, since its other half would not see an SQLite ledger.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from merlin_tracking import TrackingDatabase
from tests.support.redis_server import RedisServer, RedisServerError
from tests.support.redis_topologies import RedisClusterNodes, running


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server only the tests use."""
    external = os.environ.get("MERLIN_TRACKING_TEST_REDIS_URL")
    if external:
        yield external
        return
    try:
        server = RedisServer(name="mt-session-redis-").start()
    except RedisServerError as exc:
        pytest.exit(f"{exc} (scripts/test.sh installs redis-server)", 3)
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisClusterNodes]:
    """A 3-master Redis Cluster of the tests (each test uses prefixes of its own)."""
    yield from running(RedisClusterNodes(), "a 3-master Redis Cluster")


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"test_{uuid.uuid4().hex[:12]}"


STORE_BACKENDS = ("redis", "sqlite")
_REDIS_FIXTURES = frozenset({"redis_url", "raw_redis"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every ``db`` test on each store, unless it also talks to Redis directly."""
    names = set(metafunc.fixturenames)
    if "db" in names and not names & _REDIS_FIXTURES:
        metafunc.parametrize("store_backend", STORE_BACKENDS)


@pytest.fixture
def store_backend() -> str:
    """The store behind ``db`` (parametrised by ``pytest_generate_tests``)."""
    return "redis"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite ledger file (``sqlite:///`` + absolute path)."""
    return f"sqlite:///{tmp_path / 'tracking.db'}"


@pytest.fixture
def db(request: pytest.FixtureRequest, store_backend: str, prefix: str) -> TrackingDatabase:
    """The ledger under test, on each store in turn."""
    if store_backend == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("redis_url")
    return TrackingDatabase.from_url(url, prefix=prefix)


@pytest.fixture
def redis_db(redis_url: str, prefix: str) -> TrackingDatabase:
    """The ledger on Redis only, for tests about Redis itself."""
    return TrackingDatabase.from_url(redis_url, prefix=prefix)


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
