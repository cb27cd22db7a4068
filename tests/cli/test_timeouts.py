"""A server that accepts connections and never answers (a frozen Redis) ends a command in
seconds with exit code 3 and a message saying what happened; the wait is configurable."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from merlin_tracking import ConfigurationError, StoreUnavailableError, TrackingDatabase
from merlin_tracking.config import TrackingConfig
from merlin_tracking.errors import InvalidRecordError
from tests.support.cli import Cli


@pytest.fixture
def frozen_server() -> Iterator[str]:
    """A TCP listener on loopback that takes every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def test_the_cli_gives_up_on_a_frozen_server_within_seconds(frozen_server: str) -> None:
    started = time.monotonic()
    result = Cli(frozen_server, "p")("runs", "list")
    elapsed = time.monotonic() - started
    assert result.exit_code == 3, result.output
    assert "did not answer in time" in result.output and "--timeout" in result.output
    assert elapsed < 10, elapsed  # default: a few seconds per request, none retried


def test_the_wait_follows_the_timeout_option(frozen_server: str) -> None:
    started = time.monotonic()
    result = Cli(frozen_server, "p")("runs", "list", env={"MERLIN_TRACKING_TIMEOUT": "0.3"})
    assert result.exit_code == 3 and time.monotonic() - started < 3
    started = time.monotonic()
    result = Cli(frozen_server, "p")("--timeout", "0.3", "info")
    assert result.exit_code == 3 and time.monotonic() - started < 3
    bad = Cli(frozen_server, "p")("--timeout", "0", "info")
    assert bad.exit_code == 2 and "--timeout" in bad.output


def test_the_api_and_the_workers_take_a_timeout(frozen_server: str) -> None:
    db = TrackingDatabase.from_url(frozen_server, prefix="p", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="did not answer in time"):
        db.runs.get_all()
    assert time.monotonic() - started < 3
    with pytest.raises(InvalidRecordError, match="timeout"):
        TrackingDatabase.from_url(frozen_server, timeout=-1)
    conf = {"tracking_enabled": True, "tracking_url": frozen_server, "tracking_timeout": "2.5"}
    assert TrackingConfig.from_app_conf(conf, environ={}).timeout == 2.5
    with pytest.raises(ConfigurationError, match="tracking_timeout"):
        TrackingConfig.from_app_conf({**conf, "tracking_timeout": "soon"}, environ={})
