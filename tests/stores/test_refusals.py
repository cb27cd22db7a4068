"""A Redis server that answers but refuses (out of memory, a read-only replica, an ACL user
without the permission) gives a typed error naming what the server said and what to do; a
worker's tracker keeps its updates until the refusal passes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from merlin_tracking import StoreRefusedError, TrackingDatabase
from merlin_tracking.config import TrackingConfig
from merlin_tracking.identity import RunIdentity
from merlin_tracking.records.events import TaskEventKind
from merlin_tracking.signals.tracker import Tracker
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer


@pytest.fixture
def small_server() -> Iterator[RedisServer]:
    server = RedisServer(["--maxmemory-policy", "noeviction"]).start()
    try:
        yield server
    finally:
        server.close()


def _fill(server: RedisServer) -> redis.Redis:
    """Put the server over its memory limit: ballast, then a maxmemory below what it uses."""
    client = redis.Redis.from_url(server.url)
    for n in range(8):
        client.set(f"ballast:{n}", b"x" * 500_000)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - 1_000_000)
    return client


def _free(client: redis.Redis) -> None:
    client.config_set("maxmemory", 0)


def test_out_of_memory_is_a_refusal_that_says_what_to_do(small_server: RedisServer) -> None:
    db = TrackingDatabase.from_url(small_server.url, prefix="oom")
    db.studies.create("before")
    client = _fill(small_server)
    with pytest.raises(StoreRefusedError) as caught:
        db.runs.create("s", "/ws/oom", ["q"])
    assert caught.value.code == "OOM"
    assert "out of memory" in str(caught.value) and "maxmemory" in str(caught.value)
    assert [s.name for s in db.studies.get_all()] == ["before"]  # reads still answer
    _free(client)
    assert db.runs.create("s", "/ws/oom", ["q"]).tasks_queued == 0


def test_a_tracker_keeps_its_updates_through_out_of_memory(small_server: RedisServer) -> None:
    db = TrackingDatabase.from_url(small_server.url, prefix="buffered")
    run_id = db.runs.create("s", "/ws/buffered", ["q"]).id
    tracker = Tracker(TrackingConfig(enabled=True, url=small_server.url, prefix="buffered"))
    tracker.remember_run("/ws/buffered", run_id)
    run = RunIdentity("s", "/ws/buffered")
    client = _fill(small_server)
    for n in range(5):
        tracker.record(run, f"t{n}", TaskEventKind.PUBLISHED, "q")
        tracker.record(run, f"t{n}", TaskEventKind.RAN, worker="w@n")
    assert tracker.flush(1.0) is False  # refused: kept
    assert db.runs.get(run_id).tasks_queued == 0
    _free(client)
    assert tracker.flush(5.0) is True
    done = db.runs.get(run_id)
    assert (done.tasks_queued, done.tasks_succeeded) == (5, 5)


def test_a_read_only_replica_is_a_refusal_and_still_answers_reads() -> None:
    master = RedisServer().start()
    replica = RedisServer(["--replicaof", "127.0.0.1", str(master.port)]).start()
    try:
        TrackingDatabase.from_url(master.url, prefix="rep").studies.create("on-master")
        client = redis.Redis.from_url(replica.url)
        wait_until(lambda: client.exists("{rep}:study:ids") or None, 20, "the replica synced")
        on_replica = TrackingDatabase.from_url(replica.url, prefix="rep")
        assert [s.name for s in on_replica.studies.get_all()] == ["on-master"]
        with pytest.raises(StoreRefusedError, match=r"read-only replica.*master") as caught:
            on_replica.studies.create("on-replica")
        assert caught.value.code == "READONLY"
    finally:
        replica.close()
        master.close()


def test_an_acl_user_without_the_permission_is_told_so(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    user = f"ro_{prefix}"
    raw_redis.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["*"], commands=["+@read", "+@connection"]
    )
    try:
        host = raw_redis.connection_pool.connection_kwargs
        db = TrackingDatabase.from_url(
            f"redis://{user}:pw@{host['host']}:{host['port']}/0", prefix=prefix
        )
        with pytest.raises(StoreRefusedError, match="ACL user") as caught:
            db.studies.create("nope")
        assert caught.value.code == "NOPERM" and "pw@" not in str(caught.value)
    finally:
        raw_redis.acl_deluser(user)
