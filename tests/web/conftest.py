"""Fixtures of the web tests: a small ledger (on both stores) and the server reading it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from merlin_tracking import TrackingDatabase
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.records.events import TaskEventKind as K
from tests.support.web import WebServer

HOSTILE = "<script>alert(1)</script>"


@dataclass(frozen=True)
class Book:
    """What the ``book`` fixture wrote: a completed run, a failed one and a stalled one."""

    completed: str
    failed: str
    stalled: str


def store_url(request: pytest.FixtureRequest, store_backend: str) -> str:
    return str(request.getfixturevalue("sqlite_url" if store_backend == "sqlite" else "redis_url"))


@pytest.fixture
def url(request: pytest.FixtureRequest, store_backend: str, db: TrackingDatabase) -> str:
    """The URL of the ``db`` fixture's store."""
    return store_url(request, store_backend)


@pytest.fixture
def book(db: TrackingDatabase) -> Book:
    """Worker sim@n1 (live) and sim@n2 (stopped with a task in flight), a completed run of
    a study with a hostile name, a failed run and a stalled one."""
    lw = db.logical_workers.create("sim", ["sim"])
    db.physical_workers.create("sim@n1", pid=1, host="n1", logical_worker_id=lw.id, stale_after=60)
    db.physical_workers.create("sim@n2", pid=2, host="n2", logical_worker_id=lw.id, stale_after=60)
    t0 = int(time.time() * 1_000_000) - 10_000_000
    completed = db.runs.create(HOSTILE, "/ws/done", ["sim"])
    failed = db.runs.create("sweep", "/ws/failed", ["sim"])
    stalled = db.runs.create("sweep", "/ws/stalled", ["sim", "orphan"])
    events = []
    for i in range(4):
        events += [
            TaskEvent(completed.id, f"ok-{i}", K.PUBLISHED, "sim", "step", at=t0 + i),
            TaskEvent(completed.id, f"ok-{i}", K.STARTED, worker="sim@n1", at=t0 + 1000 + i),
            TaskEvent(completed.id, f"ok-{i}", K.SUCCEEDED, worker="sim@n1", at=t0 + 500_000 + i),
        ]
    events += [
        TaskEvent(failed.id, "bad", K.PUBLISHED, "sim", "step", at=t0),
        TaskEvent(failed.id, "bad", K.STARTED, worker="sim@n1", at=t0 + 1000),
        TaskEvent(
            failed.id,
            "bad",
            K.FAILED,
            worker="sim@n1",
            at=t0 + 2000,
            error=f"ValueError: {HOSTILE}",
        ),
        TaskEvent(stalled.id, "held", K.PUBLISHED, "sim", "step", at=t0),
        TaskEvent(stalled.id, "held", K.STARTED, worker="sim@n2", at=t0 + 1000),
        TaskEvent(stalled.id, "wait", K.PUBLISHED, "orphan", "post", at=t0),
    ]
    db.runs.record_events(events, settle=0.0)
    db.physical_workers.mark_stopped("sim@n2")  # "held" is LOST
    return Book(completed.id, failed.id, stalled.id)


@pytest.fixture
def server(url: str, prefix: str) -> Iterator[WebServer]:
    web = WebServer(url, prefix)
    yield web
    web.close()


TOKEN = "t0k3n-for-tests"


@pytest.fixture
def writable(url: str, prefix: str) -> Iterator[WebServer]:
    web = WebServer(url, prefix, allow_writes=True, token=TOKEN)
    yield web
    web.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keeps each phase's report on the test item, so a fixture can tell that the test failed
    (and keep a screenshot)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
