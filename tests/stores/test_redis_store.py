"""Redis-specific guarantees: key namespace, foreign keys, round trips, URLs and outages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from merlin_tracking import (
    InvalidRecordError,
    StoreUnavailableError,
    TrackingDatabase,
    TrackingError,
)
from merlin_tracking.records import Run, RunStatus, TaskState
from merlin_tracking.records.events import TaskEvent, TaskEventKind
from merlin_tracking.urls import mask_url
from tests.support.wave1 import write_wave_1_run


def _populate(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("w", ["q1", "q2"])
    db.runs.create("s", "/ws/1", ["q1"])
    db.runs.create("s", "/ws/2", ["q2"], parameters={"x": 1})
    db.physical_workers.create("w@n", pid=1, host="n", logical_worker_id=lw.id)


def test_all_keys_are_under_the_prefix_in_one_cluster_slot(
    redis_db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    _populate(redis_db)
    keys = list(raw_redis.scan_iter(match="*" + prefix + "*"))
    assert keys
    assert all(k.startswith(("{" + prefix + "}:").encode()) for k in keys)
    assert len({key_slot(k) for k in keys}) == 1


def test_foreign_keys_are_never_touched(
    redis_db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    foreign = {
        f"celery-task-meta-{prefix}": b"result",
        f"{prefix}:run:x": b"not ours (no hash tag)",
        f"other_{prefix}": b"x",
    }
    for key, value in foreign.items():
        raw_redis.set(key, value)
    try:
        _populate(redis_db)
        redis_db.get_all("run")
        redis_db.delete_everything()
        for key, value in foreign.items():
            assert raw_redis.get(key) == value
    finally:
        raw_redis.delete(*foreign)


def test_no_keyspace_scans_or_flushes(redis_db: TrackingDatabase, raw_redis: redis.Redis) -> None:
    _populate(redis_db)
    raw_redis.config_resetstat()
    redis_db.get_all("run", {"queues": "q1"})
    redis_db.get_all("study")
    redis_db.info()
    redis_db.delete_everything()
    stats = raw_redis.info("commandstats")
    forbidden = {"cmdstat_keys", "cmdstat_scan", "cmdstat_flushdb", "cmdstat_flushall"}
    assert forbidden.isdisjoint(stats)


def test_two_prefixes_are_independent(redis_url: str, prefix: str) -> None:
    one = TrackingDatabase.from_url(redis_url, prefix=prefix + "_a")
    two = TrackingDatabase.from_url(redis_url, prefix=prefix + "_b")
    one.runs.create("s", "/ws/1", ["q"])
    assert two.runs.get_all() == []
    two.runs.create("s", "/ws/1", ["q"])  # same workspace, other ledger
    two.delete_everything()
    assert len(one.runs.get_all()) == 1


class RoundTrips:
    """Counts client-to-server round trips by wrapping redis-py's socket writes."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    counter = RoundTrips()
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        counter.count += 1
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    yield counter


def test_round_trip_budget(redis_db: TrackingDatabase, round_trips: RoundTrips) -> None:
    redis_db.logical_workers.create("w", ["q"])
    redis_db.runs.create("s", "/ws/0", ["q"])  # warm up: script loading and connection set-up
    round_trips.count = 0
    run = redis_db.runs.create("s", "/ws/1", ["q"])
    assert round_trips.count == 1
    round_trips.count = 0
    redis_db.runs.create("a new study", "/ws/new", ["q"])  # the study is created in the same call
    assert round_trips.count == 1
    assert redis_db.studies.get("a new study").runs == (redis_db.runs.get("/ws/new").id,)
    round_trips.count = 0
    redis_db.runs.get(run.id)
    assert round_trips.count == 1
    round_trips.count = 0
    redis_db.runs.get("/ws/1")
    assert round_trips.count == 1
    for index in range(2, 60):
        redis_db.runs.create("s", f"/ws/{index}", ["q"])
    redis_db.runs.get_all({"queues": "q", "status": "running"})  # warm up the filter script
    round_trips.count = 0
    assert len(redis_db.runs.get_all({"queues": "q", "status": "initialized"})) == 61
    assert round_trips.count <= 2
    round_trips.count = 0
    assert len(redis_db.runs.get_all()) == 61
    assert round_trips.count <= 2


def test_schema_version_is_stored_and_checked(
    redis_db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    run = redis_db.runs.create("s", "/ws/1", ["q"])
    key = "{" + prefix + "}:run:" + run.id[1:]  # run r12 is stored under :run:12
    assert raw_redis.hget(key, "v") == str(Run.SCHEMA_VERSION).encode()
    assert raw_redis.hget(key, "workspace") == b'"/ws/1"'
    raw_redis.hset(key, "v", str(Run.SCHEMA_VERSION + 1))
    with pytest.raises(TrackingError, match="upgrade"):
        redis_db.runs.get(run.id)


def test_store_unavailable_names_the_masked_url() -> None:
    db = TrackingDatabase.from_url("redis://user:s3cret@127.0.0.1:1/0")
    with pytest.raises(StoreUnavailableError) as caught:
        db.runs.get_all()
    message = str(caught.value)
    assert "redis://user:***@127.0.0.1:1/0" in message
    assert "s3cret" not in message


def test_wrong_password_is_store_unavailable(redis_url: str) -> None:
    bad = redis_url.replace("redis://", "redis://nobody:wrong@")
    with pytest.raises(StoreUnavailableError, match=r"\*\*\*"):
        TrackingDatabase.from_url(bad).studies.get_all()


def test_url_masking() -> None:
    assert mask_url("redis://:pw@h:6379/2") == "redis://:***@h:6379/2"
    assert mask_url("rediss://alice:pw@h/0") == "rediss://alice:***@h/0"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_db_number_in_url_is_used(redis_url: str, prefix: str, raw_redis: redis.Redis) -> None:
    db3 = TrackingDatabase.from_url(redis_url.rsplit("/", 1)[0] + "/3", prefix=prefix)
    db3.studies.create("in-db-3")
    assert not raw_redis.exists("{" + prefix + "}:study:ids")
    other = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    assert other.exists("{" + prefix + "}:study:ids")
    db3.delete_everything()


def test_acl_user_in_url(redis_url: str, raw_redis: redis.Redis, prefix: str) -> None:
    user = f"u_{prefix}"
    raw_redis.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["{" + prefix + "}*"], commands=["+@all"]
    )
    try:
        url = redis_url.replace("redis://", f"redis://{user}:pw@")
        db = TrackingDatabase.from_url(url, prefix=prefix)
        assert db.runs.create("s", "/ws", ["q"]).workspace == "/ws"
        outsider = TrackingDatabase.from_url(url, prefix=prefix + "x")
        with pytest.raises(StoreUnavailableError, match="NOPERM"):
            outsider.studies.create("x")
    finally:
        raw_redis.acl_deluser(user)


@pytest.mark.parametrize("bad_prefix", ["", "a{b}", "has space", "x" * 101])
def test_bad_prefix_is_refused(redis_url: str, bad_prefix: str) -> None:
    with pytest.raises(InvalidRecordError, match="prefix"):
        TrackingDatabase.from_url(redis_url, prefix=bad_prefix)


def test_unsupported_url_scheme() -> None:
    with pytest.raises(InvalidRecordError, match="redis://"):
        TrackingDatabase.from_url("mongodb://localhost/x")


def test_script_cache_flush_is_survived(redis_db: TrackingDatabase, raw_redis: redis.Redis) -> None:
    redis_db.runs.create("s", "/ws/1", ["q"])
    raw_redis.script_flush()
    assert redis_db.runs.create("s", "/ws/2", ["q"]).workspace == "/ws/2"


def test_wave_1_task_states_read_and_count_on(
    redis_db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    """Wave 1 kept one state letter per task and settling runs in a plain set: its tasks read
    as records (a started or finished one ran once), go on counting once, and the set moves."""
    run = redis_db.runs.create("s", "/ws/old", ["q"])
    lw = redis_db.logical_workers.create("w", ["q"])
    redis_db.physical_workers.create("w@n", pid=1, logical_worker_id=lw.id)
    key = write_wave_1_run(raw_redis, prefix, run.id)
    tasks = {task.id: (task.state, task.attempts) for task in redis_db.tasks.get_all()}
    assert tasks == {
        "done": (TaskState.SUCCEEDED, 1),
        "busy": (TaskState.STARTED, 1),
        "waiting": (TaskState.QUEUED, 0),
    }
    assert not raw_redis.exists("{" + prefix + "}:run:settling")  # moved by the catch-up
    redis_db.runs.record_events([TaskEvent(run.id, "busy", TaskEventKind.SUCCEEDED)])
    # Its task still waiting is counted as waiting (on a queue it cannot name): not STALLED.
    assert redis_db.runs.get(run.id).status is RunStatus.RUNNING
    assert raw_redis.hget(key, "v") == str(Run.SCHEMA_VERSION).encode()
    redis_db.runs.record_events([TaskEvent(run.id, "waiting", TaskEventKind.RAN)])
    done = redis_db.runs.get(run.id)
    assert (done.tasks_queued, done.tasks_started, done.tasks_succeeded) == (3, 3, 3)
    assert done.status is RunStatus.COMPLETED


def test_bytes_per_task_record_stay_small(
    redis_db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    """A finished task's record and its share of the run's indexes, in a run too large for
    Redis's compact encoding (the measured figure is in docs/benchmarks.md)."""
    run = redis_db.runs.create("s", "/ws/big", ["q"])
    ids = [f"{i:08d}-0000-4000-8000-{i:012d}" for i in range(2000)]  # Celery's uuid4 shape
    now = run.created_at.timestamp()
    events = []
    for n, task_id in enumerate(ids):
        published = round((now + n * 0.01) * 1e6)  # a task every 10 ms, each running 2.5 s
        events += [
            TaskEvent(
                run.id, task_id, TaskEventKind.PUBLISHED, "q", name="app.simulate", at=published
            ),
            TaskEvent(
                run.id,
                task_id,
                TaskEventKind.RAN,
                worker="sim@node7",
                at=published + 500_000,
                ended=published + 3_000_000,
            ),
        ]
    for start in range(0, len(events), 500):
        redis_db.runs.record_events(events[start : start + 500])
    ledger_keys = [k for k in raw_redis.scan_iter("{" + prefix + "}:run:" + run.id[1:] + ":*")]
    used = sum(int(raw_redis.memory_usage(k) or 0) for k in ledger_keys)
    assert used / len(ids) <= 120, used / len(ids)  # the goal: <= 120 B per task record
