"""The one launcher of private redis-servers for the tests (loopback, a free port, no data kept).

Every server a test needs is started here: the session's server (``tests/conftest.py``), servers
a test stops and starts again (outages), TLS servers. ``extra`` adds server options (TLS files,
``--requirepass``, ...); ``serve_port`` is the port clients use (the TLS port when the plain one
is off).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence

import redis


class RedisServerError(RuntimeError):
    """The server could not be started (missing binary, died at start-up, no answer)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of the tests, that can be stopped and started again on the same port.

    ``stop`` saves the data set first (``SHUTDOWN SAVE``) and ``start`` loads it again, like a
    Redis restart with persistence; ``close`` kills it and removes its folder.
    """

    def __init__(
        self,
        extra: Sequence[str] = (),
        port: int | None = None,
        url: str | None = None,
        name: str = "mt-redis-",
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server is not installed: run scripts/test.sh")
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix=name)
        # The folder goes with the object, or at interpreter exit (a session ended by Ctrl-C, a
        # server whose start failed and that nobody got to close).
        self._remove_dir = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.extra = list(extra)
        self.url = url or f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "redis.log")

    def start(self, timeout: float = 10.0) -> RedisServer:
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir]
        files = ["--dbfilename", "dump.rdb", "--logfile", self.log]
        port = [] if "--port" in self.extra else ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            [self.binary, *port, *base, *files, *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while not self._answers(client):
                if time.monotonic() > deadline:
                    raise RedisServerError(f"redis-server did not answer at {self.url}")
                time.sleep(0.05)
        except RedisServerError as exc:
            log = self._log_tail()
            self.close()  # the caller gets no server to close: nothing may stay behind
            raise RedisServerError(f"{exc}{log}") from None
        finally:
            client.close()
        return self

    def _log_tail(self, limit: int = 600) -> str:
        try:
            with open(self.log, errors="replace") as handle:
                return "; its log ends: " + handle.read()[-limit:]
        except OSError:
            return ""

    def _answers(self, client: redis.Redis) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RedisServerError(f"redis-server exited with {self.proc.returncode} at start-up")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        """Save and shut down; the port refuses connections afterwards."""
        assert self.proc is not None
        client = redis.Redis.from_url(self.url)
        try:
            client.shutdown(save=True)
        finally:
            client.close()
        self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self._remove_dir()
