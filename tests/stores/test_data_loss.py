"""A store that lost its data, or its Lua scripts, under a live tracker.

A run whose record vanished while its tasks still report is created again by the tracker that
sends their next events: under its old id when that is free, in its workspace and study, marked
with ``recovered_at``, counting exactly the events sent from then on. A Redis server that forgot
its scripts (a restart, SCRIPT FLUSH) gets them loaded again on every path, pipelines included;
one that keeps forgetting is a typed refusal, never a lost update. Whole ledgers are lost on
Redis by FLUSHALL on a private server; on both stores a run and its study deleted by hand
vanish the same way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
import redis

from merlin_tracking import (
    DuplicateEntityError,
    InvalidRecordError,
    Run,
    StoreRefusedError,
    TrackingDatabase,
)
from merlin_tracking.config import TrackingConfig
from merlin_tracking.identity import RunIdentity
from merlin_tracking.records.events import TaskEvent, TaskEventKind
from merlin_tracking.signals.tracker import Tracker
from tests.support.celery import captured_logs
from tests.support.redis_server import RedisServer

K = TaskEventKind


@pytest.fixture
def store_url(request: pytest.FixtureRequest, db: TrackingDatabase, store_backend: str) -> str:
    """The URL behind ``db`` (a tracker opens its own connection to it)."""
    return str(request.getfixturevalue("sqlite_url" if store_backend == "sqlite" else "redis_url"))


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private redis-server this test may empty."""
    started = RedisServer().start()
    try:
        yield started
    finally:
        started.close()


@contextlib.contextmanager
def script_flush_storm(url: str) -> Iterator[None]:
    """SCRIPT FLUSH in a loop on another connection while the block runs."""
    stop = threading.Event()

    def flush_scripts() -> None:
        client = redis.Redis.from_url(url)
        while not stop.is_set():
            client.script_flush()
        client.close()

    flusher = threading.Thread(target=flush_scripts, daemon=True)
    flusher.start()
    try:
        yield
    finally:
        stop.set()
        flusher.join(10)


def forget_run(db: TrackingDatabase, run: Run) -> None:
    """The run and its study vanish, as they do when the store loses its data."""
    db.runs.delete(run.id)
    assert run.study_id is not None
    db.studies.delete(run.study_id)


def counted(db: TrackingDatabase, run_id: str) -> tuple[int, int, int]:
    run = db.runs.get(run_id)
    return run.tasks_queued, run.tasks_started, run.tasks_succeeded


# ------------------------------------------------------------------ RunManager.recover
def test_recover_keeps_the_id_workspace_and_study_name_and_marks_the_run(
    db: TrackingDatabase,
) -> None:
    first = db.runs.create("study", "/ws/a", ["q"], task_retention=60)
    forget_run(db, first)
    recovered = db.runs.recover(first.id, "study", "/ws/a", ["q"], task_retention=60)
    assert (recovered.id, recovered.workspace, recovered.queues) == (first.id, "/ws/a", ("q",))
    assert recovered.recovered_at is not None
    assert recovered.recovered_at == recovered.created_at
    assert recovered.counters == first.counters  # all zero: it counts from now on
    stored = db.runs.get(first.id)
    assert stored == recovered  # the mark round-trips through the store
    assert Run.from_dict(stored.to_dict()) == stored
    study = db.studies.get("study")
    assert study.runs == (first.id,) and stored.study_id == study.id
    later = db.runs.create("study", "/ws/b", ["q"])
    assert later.recovered_at is None and later.id != first.id


def test_recover_takes_a_fresh_id_when_the_old_one_went_to_another_run(
    db: TrackingDatabase,
) -> None:
    other = db.runs.create("study", "/ws/other", [])
    recovered = db.runs.recover(other.id, "study", "/ws/lost", [])
    assert recovered.id != other.id and recovered.recovered_at is not None
    assert db.runs.get("/ws/lost").id == recovered.id
    assert db.runs.get(other.id).workspace == "/ws/other"


def test_recover_in_a_workspace_that_has_a_run_names_it_and_mark_recovered_marks_it_once(
    db: TrackingDatabase,
) -> None:
    existing = db.runs.create("study", "/ws/a", [])
    with pytest.raises(DuplicateEntityError) as caught:
        db.runs.recover("r999", "study", "/ws/a", [])
    assert caught.value.existing_id == existing.id
    db.runs.mark_recovered(existing.id)
    marked = db.runs.get(existing.id).recovered_at
    assert marked is not None
    db.runs.mark_recovered(existing.id)
    assert db.runs.get(existing.id).recovered_at == marked


def test_recovered_at_is_set_by_the_package_only(db: TrackingDatabase) -> None:
    with pytest.raises(InvalidRecordError, match="recovered_at"):
        db.runs.create("study", "/ws/a", [], recovered_at="2024-01-01T00:00:00+00:00")


# ------------------------------------------------------------------ the tracker heals
def test_a_tracker_recreates_a_vanished_run_and_counts_from_then_on(
    db: TrackingDatabase, store_url: str, prefix: str
) -> None:
    tracker = Tracker(TrackingConfig(enabled=True, url=store_url, prefix=prefix))
    run = RunIdentity("study", "/ws/healing")
    for n in range(3):
        tracker.record(run, f"before{n}", K.PUBLISHED, "q")
        tracker.record(run, f"before{n}", K.RAN, "q", worker="w@node")
    assert tracker.flush(5.0)
    first = db.runs.get("/ws/healing")
    assert counted(db, first.id) == (3, 3, 3) and first.recovered_at is None

    forget_run(db, first)
    with captured_logs() as logs:
        for n in range(5):
            tracker.record(run, f"after{n}", K.PUBLISHED, "q")
        tracker.record(run, "after0", K.RAN, "q", worker="w@node")
        assert tracker.flush(5.0)
    again = db.runs.get("/ws/healing")
    assert again.id == first.id and again.recovered_at is not None
    assert counted(db, again.id) == (5, 1, 1)  # the batch that found it missing is counted
    assert again.queues == ("q",)
    assert db.studies.get("study").runs == (again.id,)
    assert logs.messages("vanished from the store")
    tracker.record(run, "after1", K.RAN, "q", worker="w@node")
    assert tracker.flush(5.0)
    assert counted(db, again.id) == (5, 2, 2)


def test_a_process_that_knew_the_run_marks_the_one_another_created_first(
    db: TrackingDatabase, store_url: str, prefix: str
) -> None:
    config = TrackingConfig(enabled=True, url=store_url, prefix=prefix)
    knew, newcomer = Tracker(config), Tracker(config)
    run = RunIdentity("study", "/ws/raced")
    knew.record(run, "t0", K.PUBLISHED, "q")
    assert knew.flush(5.0)
    forget_run(db, db.runs.get("/ws/raced"))
    newcomer.record(run, "t1", K.PUBLISHED, "q")  # knows no run: creates one, unmarked
    assert newcomer.flush(5.0)
    created = db.runs.get("/ws/raced")
    assert created.recovered_at is None
    knew.record(run, "t2", K.PUBLISHED, "q")
    assert knew.flush(5.0)
    healed = db.runs.get("/ws/raced")
    assert healed.id == created.id and healed.recovered_at is not None
    assert healed.tasks_queued == 2


def test_a_redis_restarted_empty_heals_under_the_old_run_id(server: RedisServer) -> None:
    db = TrackingDatabase.from_url(server.url, prefix="lost")
    for n in range(4):  # the run of interest is r5
        db.runs.create("other", f"/ws/other{n}", [])
    tracker = Tracker(TrackingConfig(enabled=True, url=server.url, prefix="lost"))
    run = RunIdentity("study", "/ws/lost")
    tracker.record(run, "t0", K.PUBLISHED, "q")
    assert tracker.flush(5.0)
    old_id = db.runs.get("/ws/lost").id
    assert old_id == "r5"
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.script_flush()
    client.close()
    tracker.record(run, "t1", K.PUBLISHED, "q")
    tracker.record(run, "t1", K.RAN, "q", worker="w@node")
    assert tracker.flush(5.0)
    healed = db.runs.get(old_id)
    assert healed.workspace == "/ws/lost" and healed.recovered_at is not None
    assert counted(db, old_id) == (1, 1, 1)
    # The run sequence went on from the kept id: a new run never takes it again.
    assert db.runs.create("study", "/ws/new", []).id == "r6"


def test_an_id_given_again_to_another_run_after_a_loss_gets_none_of_its_events(
    server: RedisServer,
) -> None:
    """The ledger is lost; a new run is created before the tracker reports again and gets the
    id the tracker remembers for its own workspace. Its events must not count in that run."""
    db = TrackingDatabase.from_url(server.url, prefix="reused")
    tracker = Tracker(TrackingConfig(enabled=True, url=server.url, prefix="reused"))
    run = RunIdentity("study", "/ws/mine")
    tracker.record(run, "t0", K.PUBLISHED, "q")
    assert tracker.flush(5.0)
    remembered = db.runs.get("/ws/mine").id
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    stranger = db.runs.create("another-study", "/ws/stranger", ["q"])
    assert stranger.id == remembered  # the run sequence started again
    tracker.record(run, "t1", K.PUBLISHED, "q")
    tracker.record(run, "t1", K.RAN, "q", worker="w@node")
    assert tracker.flush(5.0)
    assert counted(db, stranger.id) == (0, 0, 0)
    mine = db.runs.get("/ws/mine")
    assert mine.id != stranger.id and mine.recovered_at is not None
    assert counted(db, mine.id) == (1, 1, 1)


@pytest.mark.parametrize("workspace", ["/ws/holder", "/scratch/" + "long-path/" * 20 + "é"])
def test_events_for_a_run_known_by_another_workspace_are_refused(
    db: TrackingDatabase, workspace: str
) -> None:
    """Long workspaces too (Redis splits values over 64 bytes over several fields)."""
    run = db.runs.create("s", workspace, ["q"])
    event = TaskEvent(run.id, "t0", K.PUBLISHED, "q")
    assert db.runs.record_events([event], workspaces={run.id: workspace + "x"}) == [run.id]
    assert db.runs.get(run.id).tasks_queued == 0
    assert db.runs.record_events([event], workspaces={run.id: workspace}) == []
    assert db.runs.get(run.id).tasks_queued == 1


# ------------------------------------------------------------------ NOSCRIPT
def test_every_read_path_reloads_forgotten_scripts(
    redis_db: TrackingDatabase, raw_redis: redis.Redis
) -> None:
    run = redis_db.runs.create("s", "/ws/1", ["q"])
    raw_redis.script_flush()
    assert redis_db.runs.get(run.id).id == run.id  # catch_up + fetch: two EVALSHA in a pipeline
    raw_redis.script_flush()
    assert [r.id for r in redis_db.runs.get_all({"queues": "q", "status": "initialized"})] == [
        run.id
    ]  # find_ids in a pipeline
    raw_redis.script_flush()
    redis_db.runs.record_events([TaskEvent(run.id, "t", K.PUBLISHED, "q")])
    assert redis_db.runs.get(run.id).tasks_queued == 1


def test_a_script_flush_storm_loses_no_update_and_refuses_with_a_typed_error(
    server: RedisServer,
) -> None:
    db = TrackingDatabase.from_url(server.url, prefix="storm")
    run = db.runs.create("s", "/ws/storm", ["q"])
    applied, refused = 0, 0
    with script_flush_storm(server.url):
        for n in range(300):
            try:
                db.runs.record_events([TaskEvent(run.id, f"t{n}", K.PUBLISHED, "q")])
                applied += 1
                assert db.runs.get(run.id).id == run.id  # a pipelined read
            except StoreRefusedError as exc:  # never a bare redis error, never a StoreError
                assert exc.code == "NOSCRIPT" and "SCRIPT FLUSH" in str(exc)
                refused += 1
    assert applied > 0
    assert db.runs.get(run.id).tasks_queued == applied


def test_a_tracker_counts_exactly_through_a_script_flush_storm(server: RedisServer) -> None:
    db = TrackingDatabase.from_url(server.url, prefix="storm")
    tracker = Tracker(TrackingConfig(enabled=True, url=server.url, prefix="storm"))
    run = RunIdentity("s", "/ws/storm")
    with script_flush_storm(server.url):
        for n in range(400):
            tracker.record(run, f"t{n}", K.PUBLISHED, "q")
            tracker.record(run, f"t{n}", K.RAN, "q", worker="w@node")
    assert tracker.flush(30.0)
    assert counted(db, db.runs.get("/ws/storm").id) == (400, 400, 400)


def test_a_user_who_may_not_load_scripts_gets_a_typed_refusal_after_a_flush(
    redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    db = TrackingDatabase.from_url(redis_url, prefix=prefix)
    run = db.runs.create("s", "/ws/1", ["q"])
    user = f"noload_{prefix}"
    raw_redis.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        commands=["+@all", "-script|load", "-script|flush"],
    )
    try:
        host = raw_redis.connection_pool.connection_kwargs
        limited = TrackingDatabase.from_url(
            f"redis://{user}:pw@{host['host']}:{host['port']}/0", prefix=prefix
        )
        assert limited.runs.get(run.id).id == run.id
        raw_redis.script_flush()
        with pytest.raises(StoreRefusedError) as caught:
            limited.runs.record_events([TaskEvent(run.id, "t", K.PUBLISHED, "q")])
        assert caught.value.code == "NOPERM" and "pw@" not in str(caught.value)
        with pytest.raises(StoreRefusedError) as caught:
            limited.runs.get(run.id)
        assert caught.value.code == "NOPERM"
    finally:
        raw_redis.acl_deluser(user)
