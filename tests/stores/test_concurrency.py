"""Concurrency: many real OS processes hitting one Redis prefix at the same moment.

Every test hands one task to each of N long-lived worker processes (started once per module with
the ``spawn`` start method, so they share no sockets, no id-generator state and nothing else with
this process). Each process opens its own ``TrackingDatabase.from_url(url, prefix=prefix)``,
connects, reports ready and then waits for a common start instant, so the operations really
collide in Redis. The start instant is broadcast rather than released through a
``multiprocessing.Barrier``: a barrier wakes its waiters one at a time (each wake-up is
acknowledged through a semaphore), which spreads 64 processes over seconds on a 2-core machine;
sleeping until a shared deadline releases all of them within a scheduler tick.

Every test then reads the final state back from Redis, through the managers and through the raw
index keys (``assert_no_dangling``).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pytest
import redis

from merlin_tracking import (
    DuplicateEntityError,
    InvalidTransitionError,
    RunNotFoundError,
    RunStatus,
    StudyNotFoundError,
    TrackingDatabase,
    WorkerNotFoundError,
    WorkerStatus,
)
from merlin_tracking.ids import looks_like_id, run_sequence
from merlin_tracking.ids import run_id as make_run_id
from merlin_tracking.records import LogicalWorker
from merlin_tracking.stores.redis.keys import KeySpace, digest

SPAWN = multiprocessing.get_context("spawn")
POOL_SIZE = 65  # 64 colliding workers + 1 run creator in the largest test
START_TIMEOUT = 120.0  # first task: the process may still be importing
TASK_TIMEOUT = 60.0
START_DELAY = 0.1  # seconds between broadcasting the start instant and reaching it


# --------------------------------------------------------------------------- the process pool
def _describe(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "existing_id": getattr(exc, "existing_id", None),
        "message": str(exc),
        "traceback": traceback.format_exc(),
    }


def _child_loop(conn: Connection) -> None:
    """Body of a pool process: run the tasks sent by the test process until told to stop."""
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        _, url, prefix, action, args = message
        try:
            db = TrackingDatabase.from_url(url, prefix=prefix)
            db.store.ping()  # connect now, not inside the race
        except Exception as exc:
            conn.send(("setup-error", _describe(exc)))
            continue
        conn.send(("ready", None))
        order = conn.recv()
        if order[0] != "go":
            continue
        delay = order[1] - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            conn.send(("ok", ACTIONS[action](db, url, *args)))
        except Exception as exc:
            conn.send(("error", _describe(exc)))


@dataclass
class Outcome:
    """What one process's task did: its return value or the error it raised."""

    ok: bool
    value: Any = None
    error: dict[str, Any] | None = None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error["type"])


class ProcessPool:
    """``size`` spawned processes, each running one task per ``run`` call at a common instant."""

    def __init__(self, size: int) -> None:
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for _ in range(size):
            parent_end, child_end = SPAWN.Pipe()
            proc = SPAWN.Process(target=_child_loop, args=(child_end,), daemon=True)
            proc.start()
            child_end.close()
            self.conns.append(parent_end)
            self.procs.append(proc)

    @staticmethod
    def _recv(conn: Connection, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise TimeoutError(f"a pool process gave no answer within {timeout} s")
        return conn.recv()

    def run(
        self, url: str, prefix: str, tasks: Sequence[tuple[str, tuple[Any, ...]]]
    ) -> list[Outcome]:
        """Run ``tasks`` (action name, args), one per process, all starting at the same instant."""
        assert len(tasks) <= len(self.conns), "more tasks than pool processes"
        used = self.conns[: len(tasks)]
        for conn, (action, args) in zip(used, tasks, strict=True):
            conn.send(("task", url, prefix, action, args))
        replies = [self._recv(conn, START_TIMEOUT) for conn in used]
        failed = [reply[1] for reply in replies if reply[0] != "ready"]
        ready = [conn for conn, reply in zip(used, replies, strict=True) if reply[0] == "ready"]
        if failed:
            for conn in ready:
                conn.send(("cancel", None))
            raise AssertionError(f"pool processes could not connect: {failed[0]['traceback']}")
        start_at = time.time() + START_DELAY
        for conn in used:
            conn.send(("go", start_at))
        outcomes = []
        for conn in used:
            kind, payload = self._recv(conn, TASK_TIMEOUT)
            outcomes.append(
                Outcome(True, payload) if kind == "ok" else Outcome(False, None, payload)
            )
        return outcomes

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):  # the child already exited
                conn.send(("stop",))
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self.conns:
            conn.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPool]:
    processes = ProcessPool(POOL_SIZE)
    try:
        yield processes
    finally:
        processes.close()


def all_ok(outcomes: Sequence[Outcome]) -> list[Any]:
    """The values of ``outcomes``; fails showing the first unexpected error's traceback."""
    errors = [o.error for o in outcomes if not o.ok and o.error is not None]
    assert not errors, f"{len(errors)} process(es) failed; first: {errors[0]['traceback']}"
    return [o.value for o in outcomes]


# --------------------------------------------------------------------------- actions (in children)
_RAW: dict[str, redis.Redis] = {}


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.001)


def _run_exists(db: TrackingDatabase, workspace: str) -> bool:
    try:
        db.runs.get(workspace)
    except RunNotFoundError:
        return False
    return True


def act_create_and_attach(
    db: TrackingDatabase, url: str, workspace: str, name: str, queue: str
) -> tuple[str, bool]:
    worker = db.logical_workers.create(name, [queue])
    return worker.id, db.runs.attach_worker(workspace, worker.id)


def act_race_worker(
    db: TrackingDatabase, url: str, mode: str, name: str, queue: str, workspace: str, delay: float
) -> str:
    """Create a logical worker now ("early"), after ``delay`` ("racing") or once the run
    exists ("late")."""
    if mode == "racing":
        time.sleep(delay)
    elif mode == "late":
        _wait_for(lambda: _run_exists(db, workspace), f"run {workspace}")
    return db.logical_workers.create(name, [queue]).id


def act_race_run(
    db: TrackingDatabase, url: str, study: str, workspace: str, queue: str, min_existing: int
) -> dict[str, Any]:
    """Create the run once ``min_existing`` workers exist; snapshot worker ids around it."""
    _wait_for(lambda: db.logical_workers.count() >= min_existing, "the early workers")
    before = db.store.find_ids(LogicalWorker, {})
    run = db.runs.create(study, workspace, [queue])
    after = db.store.find_ids(LogicalWorker, {})
    return {"id": run.id, "workers": list(run.workers), "before": before, "after": after}


def act_create_study(db: TrackingDatabase, url: str, name: str) -> str:
    return db.studies.create(name).id


def act_create_run(
    db: TrackingDatabase, url: str, study: str, workspace: str, queues: list[str]
) -> str:
    return db.runs.create(study, workspace, queues).id


def act_upsert_physical(
    db: TrackingDatabase, url: str, name: str, pid: int, host: str
) -> tuple[str, int, int | None]:
    worker = db.physical_workers.create(name, pid=pid, host=host)
    return worker.id, worker.restart_count, worker.pid


def act_delete_runs(db: TrackingDatabase, url: str, targets: list[str]) -> list[str]:
    """Delete each run (by id or workspace); return the ones this process deleted."""
    deleted = []
    for target in targets:
        with contextlib.suppress(RunNotFoundError):  # another process won the race
            db.runs.delete(target)
            deleted.append(target)
    return deleted


def act_attach_churn(
    db: TrackingDatabase,
    url: str,
    runs: list[str],
    workers: list[str],
    queues: list[str],
    rounds: int,
    seed: int,
) -> dict[str, int]:
    """Attach, detach, add queues and change status on runs that may be deleted meanwhile."""
    rng = random.Random(seed)
    tally = {"done": 0, "run gone": 0, "worker gone": 0, "refused": 0}
    for _ in range(rounds):
        run, worker = rng.choice(runs), rng.choice(workers)
        op = rng.random()
        try:
            if op < 0.6:
                db.runs.attach_worker(run, worker)
            elif op < 0.75:
                db.runs.detach_worker(run, worker)
            elif op < 0.9:
                db.runs.add_queues(run, [rng.choice(queues)])
            else:
                db.runs.update(run, status=rng.choice(list(RunStatus)))
            tally["done"] += 1
        except RunNotFoundError:
            tally["run gone"] += 1
        except WorkerNotFoundError:
            tally["worker gone"] += 1
        except InvalidTransitionError:
            tally["refused"] += 1  # a status change the run's state machine does not allow
    return tally


def act_create_runs(
    db: TrackingDatabase, url: str, study: str, workspaces: list[str], queues: list[str]
) -> dict[str, Any]:
    """Create runs (their study may be deleted meanwhile); return created ids and failures."""
    created, study_gone = [], 0
    for workspace in workspaces:
        try:
            created.append(db.runs.create(study, workspace, queues).id)
        except StudyNotFoundError:
            study_gone += 1
    return {"created": created, "study gone": study_gone}


def act_delete_study(
    db: TrackingDatabase, url: str, name: str, rounds: int, remove_runs: bool
) -> int:
    deleted = 0
    for _ in range(rounds):
        with contextlib.suppress(StudyNotFoundError):  # not (re)created yet
            db.studies.delete(name, remove_associated_runs=remove_runs)
            deleted += 1
        time.sleep(0.002)
    return deleted


def act_delete_logical_workers(db: TrackingDatabase, url: str, ids: list[str]) -> list[str]:
    deleted = []
    for worker_id in ids:
        with contextlib.suppress(WorkerNotFoundError):  # another process won the race
            db.logical_workers.delete(worker_id)
            deleted.append(worker_id)
    return deleted


def act_relink_physical(
    db: TrackingDatabase, url: str, names: list[str], workers: list[str], rounds: int, seed: int
) -> dict[str, int]:
    """Point physical workers at logical workers that may be deleted meanwhile."""
    rng = random.Random(seed)
    tally = {"done": 0, "worker gone": 0}
    for _ in range(rounds):
        name, target = rng.choice(names), rng.choice(workers)
        try:
            if rng.random() < 0.5:
                db.physical_workers.create(name, logical_worker_id=target, pid=rng.randrange(1, 9))
            else:
                db.physical_workers.update(
                    name, logical_worker_id=target, status=rng.choice(list(WorkerStatus))
                )
            tally["done"] += 1
        except WorkerNotFoundError:
            tally["worker gone"] += 1
    return tally


ACTIONS: dict[str, Callable[..., Any]] = {
    name: func for name, func in globals().items() if name.startswith("act_")
}


# --------------------------------------------------------------------------- invariants
def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def set_members(raw_redis: redis.Redis, key: str) -> set[str]:
    return {_text(m) for m in raw_redis.smembers(key)}


def assert_no_dangling(db: TrackingDatabase, raw_redis: redis.Redis, prefix: str) -> None:
    """Every reference points at an existing record, from both sides, and every index agrees.

    Records are read through the managers; indexes and record hashes straight from Redis with the
    layout of ``merlin_tracking/stores/redis/keys.py``.
    """
    keys = KeySpace(prefix)
    k = keys.key

    # Sets that hold runs hold their sequence numbers (run id "r12" is member "12").
    run_sets = (":run:status:", ":run:queue:", ":runs")

    def members(key: str) -> set[str]:
        found = set_members(raw_redis, key)
        if any(marker in key for marker in run_sets) or key.endswith(":runs"):
            return {make_run_id(m) for m in found}
        return found

    def record_key(segment: str, record_id: str) -> str:
        return (
            k(segment, run_sequence(record_id) or record_id)
            if segment == "run"
            else k(segment, record_id)
        )

    def index(key: str) -> dict[bytes, str]:
        return {
            f if isinstance(f, bytes) else f.encode(): _text(v)
            for f, v in raw_redis.hgetall(key).items()
        }

    studies = {s.id: s for s in db.studies.get_all()}
    runs = {r.id: r for r in db.runs.get_all()}
    lws = {w.id: w for w in db.logical_workers.get_all()}
    pws = {w.id: w for w in db.physical_workers.get_all()}
    problems: list[str] = []

    def check(condition: bool, problem: str) -> None:
        if not condition:
            problems.append(problem)

    # Every key under the prefix: record hashes, per-record sub-keys and value indexes.
    hashes: dict[str, set[str]] = {"study": set(), "run": set(), "lw": set(), "pw": set()}
    sub_keys: list[tuple[str, str, str]] = []
    value_sets: dict[str, list[tuple[str, set[str]]]] = {}
    start = len(keys.tag) + 1
    for raw_key in raw_redis.scan_iter(match=f"{keys.tag}:*", count=1000):
        name = _text(raw_key)
        segment, _, rest = name[start:].partition(":")
        head, _, tail = rest.partition(":")
        if segment == "run" and head.isdigit():
            head = make_run_id(head)
        if looks_like_id(head) and tail == "" and segment in hashes:
            hashes[segment].add(head)
        elif looks_like_id(head) and tail:
            sub_keys.append((segment, head, tail))  # :runs, :physical, :tasks, :alive, ...
        elif head in ("queue", "name", "status", "host") and tail:
            value_sets.setdefault(f"{segment}:{head}", []).append((tail, members(name)))

    # Record hashes <-> id sets <-> what the managers list.
    check(hashes["study"] == set(studies) == members(k("study", "ids")), "study ids disagree")
    check(hashes["lw"] == set(lws) == members(k("lw", "ids")), "logical worker ids disagree")
    check(hashes["pw"] == set(pws) == members(k("pw", "ids")), "physical worker ids disagree")
    check(hashes["run"] == set(runs), f"run hashes {hashes['run'] ^ set(runs)} not listed")
    for segment, owner, suffix in sub_keys:
        check(
            owner in hashes.get(segment, set()), f"{segment}:{owner}:{suffix} outlives its record"
        )

    # Studies <-> runs.
    for study in studies.values():
        for run_id in study.runs:
            check(run_id in runs, f"study {study.id} lists missing run {run_id}")
            check(
                run_id not in runs or runs[run_id].study_id == study.id,
                f"study {study.id} lists run {run_id} of another study",
            )
    for run in runs.values():
        if run.study_id is not None:
            check(run.study_id in studies, f"run {run.id} points at missing study {run.study_id}")
            check(
                run.study_id not in studies or run.id in studies[run.study_id].runs,
                f"run {run.id} missing from its study's runs",
            )

    # Runs <-> logical workers.
    for run in runs.values():
        check(len(set(run.workers)) == len(run.workers), f"run {run.id} lists a worker twice")
        for worker_id in run.workers:
            check(worker_id in lws, f"run {run.id} lists missing worker {worker_id}")
            check(
                worker_id not in lws or run.id in lws[worker_id].runs,
                f"run {run.id} lists worker {worker_id}, which does not list the run",
            )
    for lw in lws.values():
        for run_id in lw.runs:
            check(run_id in runs, f"logical worker {lw.id} lists missing run {run_id}")
            check(
                run_id not in runs or lw.id in runs[run_id].workers,
                f"logical worker {lw.id} lists run {run_id}, which does not list the worker",
            )

    # Logical workers <-> physical workers.
    for lw in lws.values():
        for pw_id in lw.physical_workers:
            check(pw_id in pws, f"logical worker {lw.id} lists missing physical worker {pw_id}")
            check(
                pw_id not in pws or pws[pw_id].logical_worker_id == lw.id,
                f"logical worker {lw.id} lists physical worker {pw_id}, which points elsewhere",
            )
    for pw in pws.values():
        if pw.logical_worker_id is not None:
            check(
                pw.logical_worker_id in lws,
                f"physical worker {pw.id} points at missing logical worker {pw.logical_worker_id}",
            )
            check(
                pw.logical_worker_id not in lws
                or pw.id in lws[pw.logical_worker_id].physical_workers,
                f"physical worker {pw.id} missing from its logical worker's physical_workers",
            )

    # Status indexes: every run and physical worker in exactly the set of the status stored in
    # its hash (read raw: a RUNNING worker may read as STALLED once its liveness key expired).
    statuses: dict[str, str] = {}
    for segment, ids_of_type, default in (
        ("run", set(runs), RunStatus.INITIALIZED.value),
        ("pw", set(pws), WorkerStatus.RUNNING.value),
    ):
        for record_id in ids_of_type:
            stored = raw_redis.hget(record_key(segment, record_id), "status")
            statuses[record_id] = default if stored is None else str(json.loads(stored))
    for segment, enum, ids_of_type in (
        ("run", list(RunStatus), set(runs)),
        ("pw", list(WorkerStatus), set(pws)),
    ):
        status_sets = {s.value: members(k(segment, "status", s.value)) for s in enum}
        for record_id in ids_of_type:
            holding = [s for s, ids in status_sets.items() if record_id in ids]
            check(
                holding == [statuses[record_id]],
                f"{segment} {record_id} has status {statuses[record_id]} "
                f"but sits in status sets {holding}",
            )
        for status, ids in status_sets.items():
            check(
                ids <= ids_of_type, f"{segment} status {status} lists missing {ids - ids_of_type}"
            )

    # Value indexes (queues, names, hosts) hold exactly the records with that value.
    expected_values: dict[str, dict[str, set[str]]] = {}

    def expect(index_name: str, value: str, record_id: str) -> None:
        expected_values.setdefault(index_name, {}).setdefault(value, set()).add(record_id)

    for run in runs.values():
        for queue in run.queues:
            expect("run:queue", queue, run.id)
    for lw in lws.values():
        expect("lw:name", lw.name, lw.id)
        for queue in lw.queues:
            expect("lw:queue", queue, lw.id)
    for pw in pws.values():
        if pw.host is not None:
            expect("pw:host", pw.host, pw.id)
    for index_name in ("run:queue", "lw:name", "lw:queue", "pw:host"):
        found = {value: ids for value, ids in value_sets.get(index_name, [])}
        check(
            found == expected_values.get(index_name, {}),
            f"index {index_name} is {found}, records say {expected_values.get(index_name, {})}",
        )

    # Unique indexes map digest(value) -> id for exactly the existing records.
    for index_key, records, field in (
        (k("study", "name"), studies, "name"),
        (k("run", "workspace"), runs, "workspace"),
        (k("pw", "name"), pws, "name"),
    ):
        wanted = {digest(getattr(r, field)): run_sequence(r.id) or r.id for r in records.values()}
        check(index(index_key) == wanted, f"unique index {index_key} disagrees with the records")

    assert not problems, f"{len(problems)} dangling reference(s):\n" + "\n".join(problems[:30])


# --------------------------------------------------------------------------- tests
def test_64_processes_attach_distinct_workers_to_one_run(
    pool: ProcessPool, redis_url: str, prefix: str, db: TrackingDatabase, raw_redis: redis.Redis
) -> None:
    run = db.runs.create("attach-study", "ws-attach", ["run-queue"])
    tasks = [
        ("act_create_and_attach", ("ws-attach", f"worker-{i}", f"own-queue-{i}")) for i in range(64)
    ]
    results = all_ok(pool.run(redis_url, prefix, tasks))

    worker_ids = {worker_id for worker_id, _ in results}
    assert len(worker_ids) == 64
    assert all(attached for _, attached in results), "every attach was a change"
    stored = db.runs.get(run.id)
    assert len(stored.workers) == 64
    assert set(stored.workers) == worker_ids
    for worker_id in worker_ids:
        assert db.logical_workers.get(worker_id).runs == (run.id,)
        assert [r.id for r in db.runs.get_all({"workers": worker_id})] == [run.id]
    assert_no_dangling(db, raw_redis, prefix)


def test_64_workers_race_with_the_creation_of_their_run(
    pool: ProcessPool, redis_url: str, prefix: str, db: TrackingDatabase, raw_redis: redis.Redis
) -> None:
    queue, workspace = "shared-queue", "ws-race"
    modes = ["early"] * 16 + ["racing"] * 32 + ["late"] * 16
    tasks: list[tuple[str, tuple[Any, ...]]] = [
        ("act_race_run", ("race-study", workspace, queue, 16))
    ]
    tasks += [
        ("act_race_worker", (mode, f"worker-{i}", queue, workspace, (i % 32) * 0.0005))
        for i, mode in enumerate(modes)
    ]
    creator, *workers = all_ok(pool.run(redis_url, prefix, tasks))

    worker_ids = set(workers)
    assert len(worker_ids) == 64, "64 distinct logical workers"
    assert {w.id for w in db.logical_workers.get_all()} == worker_ids
    assert {w.id for w in db.logical_workers.get_all({"queues": queue})} == worker_ids
    before, after = set(creator["before"]), set(creator["after"])

    run = db.runs.get(creator["id"])
    assert len(run.workers) == len(set(run.workers)), "no worker listed twice"
    assert set(run.workers) == set(creator["workers"]), "what create_run returned is stored"
    # create_run is atomic: it attaches exactly the consumers that existed at that instant,
    # so every worker seen before it is attached, and nothing unseen after it is.
    assert before <= set(run.workers) <= after
    # The 16 "early" workers exist before the run, the 16 "late" ones only after it.
    assert 16 <= len(run.workers) <= 48, "the race had both sides"
    lws = db.logical_workers.get_all()
    assert set(run.workers) == {lw.id for lw in lws if run.id in lw.runs}
    assert all(lw.runs in ((), (run.id,)) for lw in lws)
    assert_no_dangling(db, raw_redis, prefix)


@pytest.mark.parametrize("processes", [2, 16])
def test_same_study_name_created_at_once_gives_one_study(
    pool: ProcessPool,
    redis_url: str,
    prefix: str,
    db: TrackingDatabase,
    raw_redis: redis.Redis,
    processes: int,
) -> None:
    ids = all_ok(pool.run(redis_url, prefix, [("act_create_study", ("2024",))] * processes))

    assert len(set(ids)) == 1, f"processes got different study ids: {set(ids)}"
    studies = db.studies.get_all()
    assert [s.id for s in studies] == [ids[0]]
    assert studies[0].name == "2024"
    assert db.studies.get("2024").id == ids[0]
    assert_no_dangling(db, raw_redis, prefix)


@pytest.mark.parametrize("processes", [2, 16])
def test_same_workspace_created_at_once_gives_one_run(
    pool: ProcessPool,
    redis_url: str,
    prefix: str,
    db: TrackingDatabase,
    raw_redis: redis.Redis,
    processes: int,
) -> None:
    task = ("act_create_run", ("ws-study", "/shared/workspace", ["q1", "q2"]))
    outcomes = pool.run(redis_url, prefix, [task] * processes)

    winners = [o.value for o in outcomes if o.ok]
    assert len(winners) == 1, f"{len(winners)} processes created the run"
    losers = [o.error for o in outcomes if not o.ok and o.error is not None]
    assert len(losers) == processes - 1
    for error in losers:
        assert error["type"] == DuplicateEntityError.__name__, error["traceback"]
        assert error["existing_id"] == winners[0]
    run = db.runs.get("/shared/workspace")
    assert run.id == winners[0]
    assert db.studies.get("ws-study").runs == (run.id,)
    assert [r.id for r in db.runs.get_all()] == [run.id]
    assert len(db.studies.get_all()) == 1
    assert_no_dangling(db, raw_redis, prefix)


def test_16_upserts_of_one_physical_worker_with_different_pids(
    pool: ProcessPool, redis_url: str, prefix: str, db: TrackingDatabase, raw_redis: redis.Redis
) -> None:
    pids = [4000 + i for i in range(16)]
    tasks = [("act_upsert_physical", ("celery@node1", pid, "node1")) for pid in pids]
    results = all_ok(pool.run(redis_url, prefix, tasks))

    assert len({record_id for record_id, _, _ in results}) == 1, "one record for one name"
    workers = db.physical_workers.get_all()
    assert len(workers) == 1
    worker = workers[0]
    # The first upsert creates the record; each later one carries a new pid: a restart.
    assert worker.restart_count == len(pids) - 1
    assert worker.pid in pids and isinstance(worker.pid, int)
    keys = KeySpace(prefix)
    for status in WorkerStatus:
        expected = {worker.id} if status is worker.status else set()
        assert set_members(raw_redis, keys.key("pw", "status", status.value)) == expected
    assert raw_redis.hlen(keys.key("pw", "name")) == 1
    assert_no_dangling(db, raw_redis, prefix)


def test_runs_deleted_while_workers_are_attached(
    pool: ProcessPool, redis_url: str, prefix: str, db: TrackingDatabase, raw_redis: redis.Redis
) -> None:
    queues = [f"lq{i}" for i in range(8)]
    workers = [db.logical_workers.create(f"w{i}", [q]).id for i, q in enumerate(queues)]
    runs = [db.runs.create("del-study", f"ws{i}", [queues[i % 8]]) for i in range(32)]
    run_ids = [r.id for r in runs]
    # Targets by id and by workspace, so two deleters may name one run differently.
    targets = [r.id if i % 2 else r.workspace for i, r in enumerate(runs)]
    tasks: list[tuple[str, tuple[Any, ...]]] = []
    for i in range(8):
        order = targets[:]
        random.Random(i).shuffle(order)
        tasks.append(("act_delete_runs", (order,)))
    for i in range(16):
        tasks.append(("act_attach_churn", (run_ids, workers, queues, 60, i)))
    for i in range(4):
        fresh = [f"new-{i}-{j}" for j in range(8)]
        tasks.append(("act_create_runs", ("del-study", fresh, [queues[i]])))
    results = all_ok(pool.run(redis_url, prefix, tasks))

    deleted = [target for result in results[:8] for target in result]
    assert sorted(deleted) == sorted(targets), "each run deleted exactly once"
    created = [run_id for result in results[24:] for run_id in result["created"]]
    assert len(created) == 32
    assert {r.id for r in db.runs.get_all()} == set(created)
    for worker_id in workers:
        assert set(db.logical_workers.get(worker_id).runs) <= set(created)
    assert_no_dangling(db, raw_redis, prefix)


@pytest.mark.parametrize("remove_runs", [True, False])
def test_study_deleted_while_runs_are_created_and_attached(
    pool: ProcessPool,
    redis_url: str,
    prefix: str,
    db: TrackingDatabase,
    raw_redis: redis.Redis,
    remove_runs: bool,
) -> None:
    queues = [f"sq{i}" for i in range(4)]
    workers = [db.logical_workers.create(f"w{i}", [q]).id for i, q in enumerate(queues)]
    runs = [db.runs.create("doomed", f"old-{i}", [queues[i % 4]]).id for i in range(16)]
    tasks: list[tuple[str, tuple[Any, ...]]] = [
        ("act_delete_study", ("doomed", 30, remove_runs)) for _ in range(2)
    ]
    for i in range(8):
        fresh = [f"new-{i}-{j}" for j in range(6)]
        tasks.append(("act_create_runs", ("doomed", fresh, [queues[i % 4]])))
    for i in range(8):
        tasks.append(("act_attach_churn", (runs, workers, queues, 60, 100 + i)))
    results = all_ok(pool.run(redis_url, prefix, tasks))

    assert sum(results[:2]) >= 1, "the study was deleted at least once"
    created = [run_id for result in results[2:10] for run_id in result["created"]]
    remaining = {r.id for r in db.runs.get_all()}
    if not remove_runs:
        assert set(runs) <= remaining, "runs survive the deletion of their study"
    assert remaining <= set(runs) | set(created)
    assert_no_dangling(db, raw_redis, prefix)


def test_logical_workers_deleted_while_physical_workers_link_to_them(
    pool: ProcessPool, redis_url: str, prefix: str, db: TrackingDatabase, raw_redis: redis.Redis
) -> None:
    queues = [f"pq{i}" for i in range(12)]
    workers = [db.logical_workers.create(f"w{i}", [q]).id for i, q in enumerate(queues)]
    runs = [db.runs.create("lw-study", f"ws{i}", [queues[i]]).id for i in range(12)]
    names = [f"celery{i}@host" for i in range(6)]
    for i, name in enumerate(names):
        db.physical_workers.create(name, logical_worker_id=workers[i], pid=1, host="host")
    tasks: list[tuple[str, tuple[Any, ...]]] = []
    for i in range(4):
        order = workers[:]
        random.Random(i).shuffle(order)
        tasks.append(("act_delete_logical_workers", (order,)))
    for i in range(8):
        tasks.append(("act_relink_physical", (names, workers, 60, 200 + i)))
    for i in range(8):
        tasks.append(("act_attach_churn", (runs, workers, queues, 60, 300 + i)))
    results = all_ok(pool.run(redis_url, prefix, tasks))

    deleted = [worker_id for result in results[:4] for worker_id in result]
    assert sorted(deleted) == sorted(workers), "each logical worker deleted exactly once"
    assert db.logical_workers.get_all() == []
    assert_no_dangling(db, raw_redis, prefix)
    assert all(pw.logical_worker_id is None for pw in db.physical_workers.get_all())
    assert all(run.workers == () for run in db.runs.get_all())


def test_relinking_to_a_deleted_logical_worker_leaves_no_dangling_reference(
    db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    """The sequential limit of the race above: the target was deleted just before the update."""
    kept = db.logical_workers.create("kept", ["q1"])
    gone = db.logical_workers.create("gone", ["q2"])
    worker = db.physical_workers.create("celery@host", logical_worker_id=kept.id, pid=7)
    db.logical_workers.delete(gone.id)

    with pytest.raises(WorkerNotFoundError):
        db.physical_workers.update(worker.id, status="STOPPED", logical_worker_id=gone.id)

    # A refused update must change nothing: the worker stays linked, both ways, and RUNNING.
    after = db.physical_workers.get(worker.id)
    assert after.logical_worker_id == kept.id
    assert after.status is WorkerStatus.RUNNING
    assert db.logical_workers.get(kept.id).physical_workers == (worker.id,)
    assert [w.id for w in db.physical_workers.get_all({"status": "RUNNING"})] == [worker.id]
    assert db.physical_workers.get_all({"status": "STOPPED"}) == []
    assert_no_dangling(db, raw_redis, prefix)
