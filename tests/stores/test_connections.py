"""Connection handling: TLS URLs, fork safety and per-process clients."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from merlin_tracking import TrackingDatabase
from merlin_tracking.stores.redis.connection import client_for
from tests.support.redis_server import RedisServer, RedisServerError, free_port


def _make_certificates(folder: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(folder / "server.key"), "-out", str(folder / "server.csr"))  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(folder / "server.csr"), "-CA", str(folder / "ca.crt"),
            "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "1",
            "-extfile", str(folder / "san.ext"), "-out", str(folder / "server.crt"))  # fmt: skip


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = Path(tempfile.mkdtemp(prefix="mt-tls-"))
    _make_certificates(folder)
    port = free_port()
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={folder / 'ca.crt'}"
    server = RedisServer(
        ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(folder / "server.crt"),
         "--tls-key-file", str(folder / "server.key"), "--tls-ca-cert-file", str(folder / "ca.crt"),
         "--tls-auth-clients", "no"],
        port=port,
        url=url,
        name="mt-tls-redis-",
    )  # fmt: skip
    try:
        server.start()
    except RedisServerError as exc:
        if "exited" in str(exc):
            pytest.skip(f"this redis-server was built without TLS support ({exc})")
        raise
    yield url, folder
    server.close()
    shutil.rmtree(folder, ignore_errors=True)


def test_rediss_url_with_verified_certificate(tls_redis: tuple[str, Path], prefix: str) -> None:
    url, _ = tls_redis
    db = TrackingDatabase.from_url(url, prefix=prefix)
    run = db.runs.create("tls", "/ws/tls", ["q"])
    assert db.runs.get("/ws/tls") == run
    assert db.info()["url"].startswith("rediss://")


def _child_uses_inherited_database(db: TrackingDatabase, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        run = db.runs.create("forked", f"/ws/child-{os.getpid()}", ["q"])
        queue.put(("ok", run.id, id(client_for(db.store._raw_url))))  # type: ignore[attr-defined]
    except Exception as exc:  # pragma: no cover - reported to the parent
        queue.put(("error", repr(exc), 0))


def test_database_survives_fork(redis_db: TrackingDatabase) -> None:
    redis_db.runs.create("forked", "/ws/parent", ["q"])  # the parent has a live connection now
    parent_client = id(client_for(redis_db.store._raw_url))  # type: ignore[attr-defined]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [
        context.Process(target=_child_uses_inherited_database, args=(redis_db, queue))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(30)
    assert all(status == "ok" for status, _, _ in results), results
    assert all(client_id != parent_client for _, _, client_id in results)
    # The parent's connection still works and sees every child's run.
    assert len(redis_db.runs.get_all({"study_id": redis_db.studies.get("forked").id})) == 5
