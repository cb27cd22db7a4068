"""Writes: off by default, then only with the token (API) or a logged-in session with the
CSRF value of its forms (pages); and the ``serve`` command's own checks."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from merlin_tracking import RunStatus, TrackingDatabase
from tests.support.cli import Cli
from tests.support.web import Reply, WebServer, free_port
from tests.web.conftest import TOKEN, Book


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_read_only_server_refuses_every_write(
    server: WebServer, book: Book, db: TrackingDatabase
) -> None:
    for method, path in (
        ("POST", f"/api/runs/{book.stalled}/cancel"),
        ("POST", f"/api/runs/{book.stalled}/requeue"),
        ("DELETE", f"/api/runs/{book.stalled}"),
    ):
        reply = server.request(path, method=method, headers=bearer(TOKEN))
        assert reply.status == 403, (path, reply.text)
        assert "--allow-writes" in reply.json()["error"]["message"]
    form = server.request(f"/runs/{book.stalled}/cancel", method="POST", data=b"csrf=x")
    assert form.status == 403
    assert "Cancel run" not in server.get(f"/runs/{book.stalled}").text
    assert db.runs.get(book.stalled).status is RunStatus.STALLED


def test_api_writes_need_the_token_every_time(
    writable: WebServer, book: Book, db: TrackingDatabase
) -> None:
    cancel = f"/api/runs/{book.stalled}/cancel"
    for headers in ({}, bearer("wrong"), {"Authorization": TOKEN}):
        reply = writable.request(cancel, method="POST", headers=headers)
        assert reply.status == 401, reply.text
    assert db.runs.get(book.stalled).status is RunStatus.STALLED
    done = writable.request(cancel, method="POST", headers=bearer(TOKEN)).json()
    # No broker given to the server: marked only; its lost task could not be revoked.
    assert done == {
        "dry_run": False,
        "cancelled": [book.stalled],
        "already_cancelled": [],
        "revoked": None,
        "running": 0,
    }
    assert db.runs.get(book.stalled).status is RunStatus.CANCELLED
    finished = writable.request(
        f"/api/runs/{book.completed}/cancel", method="POST", headers=bearer(TOKEN)
    )
    assert finished.status == 409 and finished.json()["error"]["type"] == "InvalidTransitionError"
    requeue = writable.request(
        f"/api/runs/{book.stalled}/requeue", method="POST", headers=bearer(TOKEN)
    ).json()
    assert (requeue["requeued"], requeue["without_message"]) == ([], ["held"])
    assert writable.request(f"/api/runs/{book.failed}", method="DELETE").status == 401
    deleted = writable.request(f"/api/runs/{book.failed}", method="DELETE", headers=bearer(TOKEN))
    assert deleted.json() == {"dry_run": False, "count": 1, "deleted": [book.failed]}
    assert writable.get(f"/api/runs/{book.failed}").status == 404
    assert (
        writable.request("/api/runs/nope/cancel", method="POST", headers=bearer(TOKEN)).status
        == 404
    )


class Browser:
    """Keeps the cookies a browser would, for the form tests."""

    def __init__(self, web: WebServer) -> None:
        self.web = web
        self.cookies: dict[str, str] = {}

    def _keep(self, reply: Reply) -> Reply:
        for name, value in reply.headers.items():
            if name.lower() == "set-cookie":
                for key, morsel in SimpleCookie(value).items():
                    self.cookies[key] = morsel.value
        return reply

    def headers(self, origin: str | None) -> dict[str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        if origin is not None:
            headers["Origin"] = origin
        return headers

    def get(self, path: str) -> Reply:
        return self._keep(self.web.get(path, headers=self.headers(None)))

    def post(self, path: str, fields: dict[str, str], origin: str | None = "") -> Reply:
        origin = self.web.base if origin == "" else origin
        data = urlencode(fields).encode()
        return self._keep(
            self.web.request(path, method="POST", data=data, headers=self.headers(origin))
        )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def test_page_forms_need_a_login_and_their_csrf_value(
    writable: WebServer, book: Book, db: TrackingDatabase
) -> None:
    browser = Browser(writable)
    page = browser.get(f"/runs/{book.stalled}").text
    assert "Cancel run" in page and "Requeue lost tasks" in page
    csrf = csrf_of(page)
    cancel = f"/runs/{book.stalled}/cancel"
    assert browser.post(cancel, {"csrf": csrf}).status == 401  # not logged in
    assert browser.post("/login", {"csrf": csrf, "token": "wrong"}).status == 401
    assert browser.post("/login", {"token": TOKEN}).status == 403  # no CSRF value
    assert "mt_auth" not in browser.cookies
    logged = browser.post("/login", {"csrf": csrf, "token": TOKEN})
    assert logged.status == 303 and "mt_auth" in browser.cookies
    assert browser.post(cancel, {}).status == 403  # CSRF value missing
    assert browser.post(cancel, {"csrf": "forged"}).status == 403
    assert browser.post(cancel, {"csrf": csrf}, origin="http://evil.example").status == 403
    assert db.runs.get(book.stalled).status is RunStatus.STALLED
    # Another browser's session cannot use this session's CSRF value.
    other = Browser(writable)
    other.get("/runs")
    other.cookies["mt_auth"] = browser.cookies["mt_auth"]
    assert other.post(cancel, {"csrf": csrf}).status == 403
    done = browser.post(cancel, {"csrf": csrf})
    assert done.status == 303 and done.headers["location"] == f"/runs/{book.stalled}"
    assert db.runs.get(book.stalled).status is RunStatus.CANCELLED


def _serve(
    url: str, prefix: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    import os

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "merlin_tracking.cli",
            "--url",
            url,
            "--prefix",
            prefix,
            "serve",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MERLIN_TRACKING_TOKEN": "", **(env or {})},
    )


def test_serve_warns_when_exposed_without_a_token(
    redis_db: TrackingDatabase, redis_url: str, prefix: str
) -> None:
    port = free_port()
    proc = _serve(redis_url, prefix, "--host", "0.0.0.0", "--port", str(port))
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "warning: listening on 0.0.0.0" in first and "no token" in first, first
        banner = proc.stderr.readline()
        assert "(read-only)" in banner
        web = WebServer.__new__(WebServer)
        web.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                if web.get("/api/runs").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_refuses_writes_without_a_token(redis_url: str, prefix: str) -> None:
    result = Cli(redis_url, prefix)("serve", "--allow-writes", env={"MERLIN_TRACKING_TOKEN": None})
    assert result.exit_code == 2
    assert "--allow-writes needs a token" in result.output


def test_serve_without_the_extra_says_what_to_install(tmp_path) -> None:
    """With starlette unimportable (as without the extra), serve exits 2 naming the extra."""
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "from merlin_tracking.cli import cli\n"
        f"cli(['--url', 'sqlite:///{tmp_path}/t.db', 'serve'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert 'serve needs starlette: pip install "merlin_tracking[web]"' in proc.stderr


def test_cancel_revokes_the_waiting_tasks_through_the_servers_broker(
    db: TrackingDatabase, book: Book, redis_url: str, prefix: str
) -> None:
    """With a broker, a cancel from the dashboard revokes as ``runs cancel`` does
    (``tests/celery/test_cancel.py`` shows that revoked tasks then never start)."""
    web = WebServer(redis_url, prefix, allow_writes=True, token=TOKEN, broker=redis_url)
    try:
        waiting = db.tasks.get_all(
            {"run_id": book.stalled, "state": ["QUEUED", "RECEIVED", "RETRY", "LOST"]}
        )
        assert waiting
        cancel = f"/api/runs/{book.stalled}/cancel"
        done = web.request(cancel, method="POST", headers=bearer(TOKEN)).json()
        assert (done["cancelled"], done["revoked"]) == ([book.stalled], len(waiting))
        again = web.request(cancel, method="POST", headers=bearer(TOKEN)).json()
        assert again["already_cancelled"] == [book.stalled]
    finally:
        web.close()
