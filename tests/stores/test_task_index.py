"""Task filters through the stores' task indexes: the same answer as filtering every record,
across runs, after redelivery and deletion, past the row index's byte columns; on Redis, reads
that follow the matches, and ledgers written before the index."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import redis

from merlin_tracking import TaskState, TrackingDatabase
from merlin_tracking.records.events import TaskEvent, TaskEventKind
from merlin_tracking.records.task import task_matches

K = TaskEventKind
T0 = 1_800_000_000_000_000


def ev(run_id: str, task: str, kind: TaskEventKind, ms: int = 0, **fields: Any) -> TaskEvent:
    return TaskEvent(run_id, task, kind, at=T0 + ms * 1000, **fields)


def uid(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


def _mixed_ledger(db: TrackingDatabase) -> list[str]:
    """Three runs of tasks in every state, two names, two queues, three workers, UUID and
    other ids; returns the run ids."""
    runs = [db.runs.create("s", f"/ws/{i}", ["q1", "q2"]).id for i in range(3)]
    events = []
    for n in range(60):
        run = runs[n % 3]
        task = uid(n) if n % 7 else f"custom-{n}"
        name, queue, node = f"app.t{n % 2}", f"q{1 + n % 2}", f"w{n % 3}@node"
        events.append(ev(run, task, K.PUBLISHED, n, queue=queue, name=name))
        step = n % 6
        if step >= 1:
            events.append(ev(run, task, K.RECEIVED, n + 1, queue=queue, worker=node))
        if step >= 2:
            events.append(ev(run, task, K.STARTED, n + 2, worker=node))
        if step == 3:
            events.append(ev(run, task, K.SUCCEEDED, n + 3, worker=node))
        if step == 4:
            events.append(ev(run, task, K.FAILED, n + 3, worker=node, error="ValueError: x"))
        if step == 5:
            events.append(ev(run, task, K.LOST, n + 3, worker=node, error="worker gone"))
    db.runs.record_events(events)
    # Redelivered elsewhere: a lost task starts again on another worker.
    db.runs.record_events([ev(runs[2], uid(5), K.RECEIVED, 100, queue="q2", worker="w9@node")])
    db.tasks.delete(uid(3))
    return runs


FILTERS: list[dict[str, Any]] = [
    {"state": "LOST"},
    {"state": ["FAILED", "SUCCEEDED"]},
    {"state": "RECEIVED", "worker": "w9@node"},
    {"name": "app.t1"},
    {"queue": "q2", "state": "QUEUED"},
    {"worker": ["w0@node", "w2@node"], "name": "app.t0"},
    {"worker": "nobody@node"},
    {"name": "app.t0", "queue": "q2"},  # matches nothing: t0 tasks went to q1
]


def test_indexed_filters_answer_as_a_scan_of_every_record_would(db: TrackingDatabase) -> None:
    runs = _mixed_ledger(db)
    everything = db.tasks.get_all()
    assert len(everything) == 59  # one deleted
    for filters, run_filter in itertools.product(FILTERS, [None, [runs[1]]]):
        asked = dict(filters, **({"run_id": run_filter} if run_filter else {}))
        normalised = {
            k: [v.upper() if k == "state" else v for v in ([vs] if isinstance(vs, str) else vs)]
            for k, vs in asked.items()
        }
        expected = [t.id for t in everything if task_matches(t, normalised)]
        assert [t.id for t in db.tasks.get_all(asked)] == expected, asked
        assert [t.id for t in db.tasks.get_all(asked, limit=2)] == expected[:2], asked
    redelivered = db.tasks.get_all({"worker": "w9@node"})
    assert [(t.id, t.state, t.attempts) for t in redelivered] == [(uid(5), TaskState.RECEIVED, 1)]
    lost = db.tasks.get_all({"state": "LOST"})
    assert lost and all(t.error == "worker gone" for t in lost)
    assert uid(5) not in {t.id for t in lost}


def test_a_worker_past_the_index_byte_range_is_still_found(db: TrackingDatabase) -> None:
    """The row index keeps 254 numbers per column; later workers are checked on records."""
    run = db.runs.create("s", "/ws/many", ["q"])
    db.runs.record_events(
        [ev(run.id, uid(n), K.RECEIVED, n, queue="q", worker=f"w{n}@node") for n in range(300)]
    )
    for n in (0, 253, 254, 255, 299):
        assert [t.id for t in db.tasks.get_all({"worker": f"w{n}@node"})] == [uid(n)]
    assert len(db.tasks.get_all({"state": "RECEIVED", "queue": "q"})) == 300


def _calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def test_a_filter_reads_only_the_runs_and_records_that_match(
    redis_db: TrackingDatabase, raw_redis: redis.Redis
) -> None:
    runs = [redis_db.runs.create("s", f"/ws/{i}", ["q"]).id for i in range(30)]
    for i, run in enumerate(runs):
        events = []
        for n in range(40):
            task = uid(i * 100 + n)
            events += [
                ev(run, task, K.PUBLISHED, n, queue="q", name="app.sim"),
                ev(run, task, K.STARTED, n + 1, worker="w@node"),
            ]
            failed = i == 17 and n == 9
            kind = K.FAILED if failed else K.SUCCEEDED
            events.append(ev(run, task, kind, n + 2, worker="w@node", error="boom"))
        redis_db.runs.record_events(events)
    redis_db.tasks.get_all({"state": "FAILED"})  # indexes the prefix's older ledgers, once
    raw_redis.config_resetstat()
    found = redis_db.tasks.get_all({"state": "FAILED"})
    assert [(t.run_id, t.id, t.error) for t in found] == [(runs[17], uid(1709), "boom")]
    # One run's rows, dictionary and text ids; one record and one error read.
    assert (_calls(raw_redis, "get"), _calls(raw_redis, "hmget")) == (1, 2)
    assert _calls(raw_redis, "hgetall") == 2


def test_a_ledger_written_before_the_index_is_read_and_then_indexed(
    redis_db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    """The previous layout: records keyed by the id's text, times from the run's creation, no
    rows. Reads find its records; the first filtered read gives it the index in place."""
    run = redis_db.runs.create("s", "/ws/old", ["q"])
    member = run.id[1:]
    base = "{" + prefix + "}:run:" + member
    done, failed = uid(1), uid(2)
    raw_redis.hset(
        base + ":dict",
        mapping={
            "napp.a": "1",
            "#1": "napp.a",
            "qq": "2",
            "#2": "qq",
            "ww@n": "3",
            "#3": "ww@n",
            "#": "3",
        },
    )
    raw_redis.hset(base + ":tasks", mapping={done: "S1,1,2,3,a,14,1e", failed: "F1,1,2,3,b,15"})
    raw_redis.hset(base + ":errors", failed, "ValueError: old")
    raw_redis.hset(
        base,
        mapping={"tasks_queued": 2, "tasks_started": 2, "tasks_succeeded": 1, "tasks_failed": 1},
    )
    created_ms = int(raw_redis.hget(base, "created_at") or 0) // 1000

    def ms_after_creation(task: Any, field: str) -> int:
        return round(getattr(task, field).timestamp() * 1000) - created_ms

    # A user who may only read gets the same answers, from the records as they are.
    raw_redis.acl_setuser(
        "reader_" + prefix,
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        commands=["+@read", "+@connection", "+evalsha", "+script|load"],
    )
    try:
        host = raw_redis.connection_pool.connection_kwargs
        reader = TrackingDatabase.from_url(
            f"redis://reader_{prefix}:secret@{host['host']}:{host['port']}/0", prefix=prefix
        )
        assert reader.tasks.get(done).name == "app.a"
        assert [t.id for t in reader.tasks.get_all({"state": "FAILED"})] == [failed]
        assert raw_redis.exists(base + ":rows") == 0
    finally:
        raw_redis.acl_deluser("reader_" + prefix)
    before = redis_db.tasks.get(done)
    assert (before.state, before.name, before.worker) == (TaskState.SUCCEEDED, "app.a", "w@n")
    assert [ms_after_creation(before, f) for f in ("queued_at", "started_at", "finished_at")] == [
        10,
        40,
        50,
    ]
    assert [t.id for t in redis_db.tasks.get_all({"state": "FAILED"})] == [failed]
    assert raw_redis.exists(base + ":rows") == 1
    assert raw_redis.hexists(base + ":tasks", uuid.UUID(done).bytes)
    after = redis_db.tasks.get(done)
    assert after == before
    assert redis_db.tasks.get(failed).error == "ValueError: old"
    # Later events count on the upgraded ledger, once.
    redis_db.runs.record_events(
        [ev(run.id, done, K.SUCCEEDED, 99, worker="w@n"), ev(run.id, uid(3), K.PUBLISHED, 99)]
    )
    assert redis_db.runs.get(run.id).tasks_queued == 3
    assert [t.id for t in redis_db.tasks.get_all({"state": "QUEUED"})] == [uid(3)]
