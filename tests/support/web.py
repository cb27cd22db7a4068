"""The dashboard server for the tests: a real uvicorn server on a free loopback port, in a
thread of the test process, and a small HTTP client (urllib) that reads what it answers."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn

from merlin_tracking.cli.context import CliState
from merlin_tracking.web.api import Settings
from merlin_tracking.web.app import create_app
from merlin_tracking.web.security import WritePolicy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(NoRedirect)


class WebServer:
    """``create_app`` served by uvicorn on ``127.0.0.1:<free port>`` until ``close``."""

    def __init__(
        self,
        url: str,
        prefix: str,
        allow_writes: bool = False,
        token: str | None = None,
        broker: str | None = None,
    ) -> None:
        settings = Settings(
            state=CliState(url=url, prefix=prefix),
            policy=WritePolicy(allow_writes=allow_writes, token=token),
            broker=broker,
        )
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.01)
        self.base = f"http://127.0.0.1:{self.port}"

    def request(
        self,
        path: str,
        method: str = "GET",
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=dict(headers or {})
        )
        try:
            with _OPENER.open(request, timeout=10) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read())

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request(path, **kwargs)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
