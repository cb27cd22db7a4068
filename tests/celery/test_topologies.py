"""Real ``celery worker`` subprocesses keeping a ledger on a Redis Cluster and on a
Sentinel-managed master, through a ``SENTINEL FAILOVER`` in the middle of a study.

Broker and result backend stay on the session Redis; only the ledger (``tracking_url``) is on
the topology under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import group

from merlin_tracking import RunStatus, TrackingDatabase, WorkerStatus
from tests.support.cli import Cli, ok
from tests.support.processes import Ledger, exact, unique, wait_until
from tests.support.redis_topologies import RedisClusterNodes, RedisSentinelGroup, running

PASSWORD = "sentinel-S3cret"


@pytest.fixture
def sentinel_group() -> Iterator[RedisSentinelGroup]:
    yield from running(RedisSentinelGroup(password=PASSWORD), "a master, replica and Sentinel")


def _ledger_on(url: str, redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(redis_url, prefix, unique("q"), tmp_path, tracking_url=url)
    try:
        yield book
    finally:
        book.reap()


@pytest.fixture
def cluster_ledger(
    cluster: RedisClusterNodes, redis_url: str, prefix: str, tmp_path: Path
) -> Iterator[Ledger]:
    # Named through one node: the workers find the other two themselves.
    yield from _ledger_on(f"redis+cluster://{cluster.addresses[1]}", redis_url, prefix, tmp_path)


@pytest.fixture
def sentinel_ledger(
    sentinel_group: RedisSentinelGroup, redis_url: str, prefix: str, tmp_path: Path
) -> Iterator[Ledger]:
    yield from _ledger_on(sentinel_group.url, redis_url, prefix, tmp_path)


def test_workers_track_a_study_on_a_cluster(cluster_ledger: Ledger) -> None:
    ledger = cluster_ledger
    worker, record = ledger.start_running("prefork", concurrency=2)
    app = ledger.client()
    ledger.wait_control(app, worker)
    run = ledger.launch(app, group(app.signature("plain_app.noop") for _ in range(12)))
    done = ledger.wait_run(run.id, RunStatus.COMPLETED)
    assert done.counters == exact(12)
    assert {t.worker for t in ledger.db.tasks.get_all({"run_id": run.id})} == {worker.node}
    cli = Cli(ledger.tracking_url or "", ledger.prefix)
    assert [r["id"] for r in cli.json("runs", "list")["runs"]] == [run.id]
    assert worker.node in ok(cli("workers", "list"))
    worker.stop(15)  # SIGTERM: a warm shutdown
    stopped = wait_until(
        lambda: ledger.db.physical_workers.get(record.id).status is WorkerStatus.STOPPED,
        30,
        "the worker recorded STOPPED",
    )
    assert stopped


def test_workers_keep_tracking_through_a_sentinel_failover(
    sentinel_ledger: Ledger, sentinel_group: RedisSentinelGroup
) -> None:
    """Tasks run across the switch; the outage buffer covers it, so every count is exact."""
    ledger = sentinel_ledger
    worker, record = ledger.start_running("prefork", concurrency=2)
    app = ledger.client()
    ledger.wait_control(app, worker)
    nap = "plain_app.sleeper"
    before = ledger.launch(app, group(app.signature(nap, (0.05,)) for _ in range(300)))
    wait_until(lambda: ledger.db.runs.get(before.id).tasks_started >= 5, 30, "tasks started")
    old_master = sentinel_group.master.port
    sentinel_group.failover()  # in the middle of the study
    assert sentinel_group.master.port != old_master
    # The switch came while tasks ran: what is counted now is on the new master.
    assert ledger.db.runs.get(before.id).tasks_succeeded < 300
    # The new master takes writes once it has a replica in sync again (the old master, when
    # the Sentinel demotes it); until then the workers buffer what their tasks report.
    sentinel_group.demoted()
    after = ledger.launch(app, group(app.signature(nap, (0.01,)) for _ in range(20)))
    assert ledger.wait_run(before.id, RunStatus.COMPLETED, timeout=90).counters == exact(300)
    assert ledger.wait_run(after.id, RunStatus.COMPLETED, timeout=90).counters == exact(20)
    # What a reader sees comes from the new master: the old one serves as its replica.
    on_new = TrackingDatabase.from_url(sentinel_group.master.url, prefix=ledger.prefix)
    assert on_new.runs.get(before.id).counters == exact(300)
    # The worker heartbeats to the new master.
    beat = on_new.physical_workers.get(record.id).heartbeat_timestamp
    assert beat is not None
    wait_until(
        lambda: (on_new.physical_workers.get(record.id).heartbeat_timestamp or beat) > beat,
        30,
        "a heartbeat on the new master",
    )
    assert PASSWORD not in (on_new.physical_workers.get(record.id).launch_cmd or "")
