"""Real ``celery worker`` subprocesses for the tests: start, signal, reap, and read back.

Workers run ``tests/apps/plain_app.py`` (a plain Celery project, tracked only through the
installed package's drop-in entry point), each in its own process group, terminated then killed
(group and all) when its test ends. A ``Ledger`` starts them against the test's Redis and prefix
and reads what they recorded with a fresh ``TrackingDatabase``, never from their memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from celery import Celery

from merlin_tracking import PhysicalWorker, Run, RunStatus, TrackingDatabase, WorkerStatus
from merlin_tracking.signals import install, launch_study

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "tests.apps.plain_app"
HEARTBEAT = 0.5  # tracking_heartbeat_interval given to the workers (seconds)
STALE_AFTER = 2.0  # tracking_stale_after given to the workers (seconds)
START_TIMEOUT = 30.0  # a worker must be recorded RUNNING this soon after Popen
STOP_TIMEOUT = 30.0  # a signalled worker must exit this soon
RUN_TIMEOUT = 60.0  # a run must reach its final status this soon
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
HOST = socket.gethostname()

T = TypeVar("T")

# Client apps stay referenced until their test module ends (tests/celery/conftest.py closes
# them): trackers are looked up by app, and a collected app must not hand its tracker on.
CLIENT_APPS: list[Celery] = []


# --------------------------------------------------------------------------- helpers
def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout is not None else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}{detail}")
        time.sleep(interval)


def unique(kind: str) -> str:
    return f"mt-{kind}-{uuid.uuid4().hex[:10]}"


def physical_by_name(db: TrackingDatabase, name: str) -> list[PhysicalWorker]:
    return db.physical_workers.get_all({"name": name})


def exact(n: int) -> dict[str, int]:
    """Counters of a run whose ``n`` tasks all succeeded once."""
    return {
        "queued": n,
        "started": n,
        "succeeded": n,
        "failed": 0,
        "retried": 0,
        "revoked": 0,
        "lost": 0,
    }


@dataclass
class Worker:
    """One ``celery worker`` subprocess and where its output goes."""

    proc: subprocess.Popen[bytes]
    node: str
    queues: list[str]
    pool: str
    stdout_path: Path
    stderr_path: Path
    _files: list[Any] = field(default_factory=list)
    _reaped: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def short_name(self) -> str:
        return self.node.split("@", 1)[0]

    def logs(self, limit: int = 4000) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                text = ""
            parts.append(f"\n--- {path.name} (last {limit} chars) ---\n{text[-limit:]}")
        return "".join(parts)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.node} did not exit within {timeout:g} s{self.logs()}")

    def stop(self, signum: int, timeout: float = STOP_TIMEOUT) -> int:
        self.signal(signum)
        return self.wait(timeout)

    def reap(self) -> None:
        """Test end: terminate, wait, then kill the whole process group (pool children too)."""
        if self._reaped:
            return
        self._reaped = True
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # strays: prefork children of a killed main
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        for handle in self._files:
            handle.close()


@dataclass
class Ledger:
    """Everything a test needs to start workers and read back what they recorded."""

    redis_url: str
    prefix: str
    queue: str
    tmp_path: Path
    workers: list[Worker] = field(default_factory=list)
    #: The store workers and clients track to when it is not ``redis_url`` (which stays their
    #: broker and result backend): workers get it as MERLIN_TRACKING_URL, clients as
    #: ``tracking_url``, and ``db`` reads it.
    tracking_url: str | None = None

    @property
    def db(self) -> TrackingDatabase:
        """A fresh reader with default settings (it knows nothing of the workers' config)."""
        return TrackingDatabase.from_url(self.tracking_url or self.redis_url, prefix=self.prefix)

    # ---------------------------------------------------------------- subprocesses
    def env(self, broker: str | None = None, **overrides: str | None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MERLIN_TRACKING", None)
        env.update(
            PLAIN_APP_BROKER_URL=broker or self.redis_url,
            PLAIN_APP_RESULT_BACKEND=self.redis_url,
            PLAIN_APP_QUEUE=self.queue,
            PLAIN_APP_TRACKING_PREFIX=self.prefix,
            PLAIN_APP_HEARTBEAT=str(HEARTBEAT),
            PLAIN_APP_STALE_AFTER=str(STALE_AFTER),
            PYTHONUNBUFFERED="1",
        )
        if self.tracking_url:
            env["MERLIN_TRACKING_URL"] = self.tracking_url
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def start(
        self,
        pool: str = "solo",
        node: str | None = None,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        broker: str | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> Worker:
        """Start ``celery -A tests.apps.plain_app worker`` (not waiting for it); ``extra_args``
        go on its command line before ``worker`` (``-b URL``, say)."""
        node = node or f"{unique('w')}@testhost"
        queues = queues or [self.queue]
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            APP,
            *(extra_args or []),
            "worker",
            "--pool",
            pool,
            "-n",
            node,
            "-Q",
            ",".join(queues),
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ]
        if concurrency is not None:
            cmd += ["--concurrency", str(concurrency)]
        tag = f"{node.split('@', 1)[0]}-{len(self.workers)}"
        stdout_path = self.tmp_path / f"{tag}.stdout"
        stderr_path = self.tmp_path / f"{tag}.stderr"
        out, err = stdout_path.open("wb"), stderr_path.open("wb")
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=self.env(broker=broker, **(env or {})),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        worker = Worker(proc, node, queues, pool, stdout_path, stderr_path, [out, err])
        self.workers.append(worker)
        return worker

    def running_record(self, worker: Worker, timeout: float = START_TIMEOUT) -> PhysicalWorker:
        """Wait until ``worker`` is recorded RUNNING with its own pid; fail fast if it exits."""
        db = self.db

        def probe() -> PhysicalWorker | None:
            if worker.proc.poll() is not None:
                pytest.fail(
                    f"worker {worker.node} exited with {worker.proc.returncode} before it was "
                    f"recorded{worker.logs()}"
                )
            for record in physical_by_name(db, worker.node):
                if record.pid == worker.pid and record.status is WorkerStatus.RUNNING:
                    return record
            return None

        return wait_until(probe, timeout, f"{worker.node} recorded RUNNING", on_timeout=worker.logs)

    def start_running(self, pool: str = "solo", **kwargs: Any) -> tuple[Worker, PhysicalWorker]:
        worker = self.start(pool, **kwargs)
        return worker, self.running_record(worker)

    # ---------------------------------------------------------------- client side
    def client(self, broker: str | None = None, queue: str | None = None) -> Celery:
        """A second app object with the workers' broker/backend, tracked by ``install``."""
        app = Celery(unique("client"), broker=broker or self.redis_url, backend=self.redis_url)
        app.conf.update(
            task_default_queue=queue or self.queue,
            tracking_prefix=self.prefix,
            broker_connection_retry_on_startup=True,
        )
        if self.tracking_url:
            app.conf.tracking_url = self.tracking_url
        assert install(app) is not None
        CLIENT_APPS.append(app)
        return app

    def wait_control(self, app: Celery, worker: Worker, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``worker`` answers a ``control.ping``: a worker records itself RUNNING
        as its consumer starts, which can be before it listens for control messages."""

        def answered() -> bool:
            if worker.proc.poll() is not None:
                pytest.fail(f"worker {worker.node} exited with {worker.proc.returncode}")
            replies = app.control.ping(destination=[worker.node], timeout=0.5)
            return any(worker.node in reply for reply in replies or [])

        wait_until(
            answered, timeout, f"{worker.node} answering control.ping", on_timeout=worker.logs
        )

    def launch(self, app: Celery, signature: Any, study: str | None = None) -> Run:
        app.set_current()  # the publish hook reports to the current app's tracker
        return launch_study(app, study or unique("study"), unique("ws"), signature)

    def wait_run(self, run_id: str, status: RunStatus, timeout: float = RUN_TIMEOUT) -> Run:
        db = self.db

        def probe() -> Run | None:
            run = db.runs.get(run_id)
            if run.status is status:
                return run
            if not run.is_active:
                pytest.fail(f"run ended {run.status.value}, wanted {status.value}: {run!r}")
            return None

        return wait_until(
            probe,
            timeout,
            f"run {run_id} {status.value}",
            on_timeout=lambda: "".join(worker.logs(1500) for worker in self.workers),
        )

    def reap(self) -> None:
        for worker in self.workers:
            worker.reap()
