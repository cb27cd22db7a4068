"""Shared fixtures: a private Redis server for the whole session, a fresh key prefix per test.

Tests never touch data they did not create: by default the session starts its own
``redis-server`` on a free port (it must be installed; ``scripts/test.sh`` installs it). Set
``MERLIN_TRACKING_TEST_REDIS_URL`` to use an existing, disposable server instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from merlin_tracking import TrackingDatabase


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(port: int | None = None) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start a throw-away redis-server; return (process, url, data dir)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit("redis-server is not installed: run scripts/test.sh, which installs it", 3)
    port = port or _free_port()
    workdir = tempfile.mkdtemp(prefix="mt-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--logfile",
            os.path.join(workdir, "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
    client.close()
    return proc, url, workdir


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server only the tests use."""
    external = os.environ.get("MERLIN_TRACKING_TEST_REDIS_URL")
    if external:
        yield external
        return
    proc, url, workdir = start_redis_server()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db(redis_url: str, prefix: str) -> TrackingDatabase:
    return TrackingDatabase.from_url(redis_url, prefix=prefix)


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
