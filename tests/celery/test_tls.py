"""A real ``celery worker`` tracking to a TLS redis-server (MERLIN_TRACKING_URL is a rediss://
URL with a password and the CA), its broker and result backend the plain session Redis: the
study completes with exact counts in the TLS ledger, none of it in the broker's Redis, and the
password shows nowhere."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest
from celery import group

from merlin_tracking import RunStatus, TrackingDatabase, WorkerStatus
from tests.support.processes import Ledger, exact
from tests.support.tls import PASSWORD, TlsLab, tls_lab, tls_url


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    with tls_lab(tmp_path_factory.mktemp("tls-worker")) as made:
        yield made


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_worker_tracks_a_study_over_tls(
    ledger: Ledger, lab: TlsLab, redis_url: str, prefix: str, pool: str
) -> None:
    ledger.tracking_url = tls_url(lab.serve(password=PASSWORD), lab.ca.cert, password=PASSWORD)
    worker, physical = ledger.start_running(pool, concurrency=2 if pool == "prefork" else None)
    client = ledger.client()
    tasks = [client.signature("plain_app.noop") for _ in range(8)]
    tasks += [client.signature("plain_app.sleeper", args=(0.01,)) for _ in range(4)]
    launched = ledger.launch(client, group(tasks))
    assert launched.tasks_queued == 12

    run = ledger.wait_run(launched.id, RunStatus.COMPLETED)
    assert run.counters == exact(12)
    assert run.queues == (ledger.queue,)
    assert len(run.workers) == 1
    assert worker.stop(signal.SIGTERM) == 0
    stopped = ledger.db.physical_workers.get(physical.id)
    assert (stopped.status, stopped.pid) == (WorkerStatus.STOPPED, None)

    # Nothing went to the broker's Redis, and the password is in no record and no log.
    plain = TrackingDatabase.from_url(redis_url, prefix=prefix)
    assert (plain.runs.count(), plain.physical_workers.count()) == (0, 0)
    assert PASSWORD not in json.dumps(stopped.to_fields(), default=str)
    logs = worker.logs(limit=1_000_000)
    assert PASSWORD not in logs
    assert "ledger rediss://:***@127.0.0.1" in logs  # the start-up line: paths shown, not it
