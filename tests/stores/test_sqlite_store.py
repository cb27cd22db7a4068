"""SQLite-specific guarantees: real concurrent processes, WAL, file errors, prefixes, schema.

The store contract itself is covered by the suites using the ``db`` fixture, which run on both
stores; this file checks what only the embedded store promises.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from merlin_tracking import (
    DuplicateEntityError,
    InvalidRecordError,
    RunStatus,
    StoreUnavailableError,
    TaskState,
    TrackingDatabase,
    TrackingError,
    WorkerStatus,
    __version__,
)
from merlin_tracking.records.events import TaskEvent, TaskEventKind
from merlin_tracking.stores import open_store
from merlin_tracking.stores.sqlite import SCHEMA_VERSION, SqliteStore, connection

FORK = multiprocessing.get_context("fork")
TABLES = (
    "study",
    "run",
    "run_queue",
    "task",
    "run_waiting",
    "logical_worker",
    "lw_queue",
    "run_worker",
    "physical_worker",
)


@pytest.fixture
def ledger(sqlite_url: str, prefix: str) -> TrackingDatabase:
    return TrackingDatabase.from_url(sqlite_url, prefix=prefix)


def raw(url: str) -> sqlite3.Connection:
    """A plain connection, as an operator's ``sqlite3`` shell would open it (foreign keys off)."""
    return sqlite3.connect(url[len("sqlite:///") :], isolation_level=None, check_same_thread=False)


def rows_of(url: str, prefix: str) -> dict[str, int]:
    with closing(raw(url)) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table} WHERE ns = ?", (prefix,)).fetchone()[
                0
            ]
            for table in TABLES
        }


# --------------------------------------------------------------------------- processes
def _child(
    action: Callable[..., Any], args: tuple[Any, ...], barrier: Any, results: Any, index: int
) -> None:
    try:
        barrier.wait(30)
        results.put((index, "ok", action(*args)))
    except DuplicateEntityError as exc:
        results.put((index, "duplicate", exc.existing_id))
    except BaseException:  # reported to the parent, which fails the test
        results.put((index, "error", traceback.format_exc()))


def in_processes(tasks: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[tuple[str, Any]]:
    """Run each (action, args) in its own forked process, all released at once; results in order."""
    barrier = FORK.Barrier(len(tasks))
    results = FORK.Queue()
    children = [
        FORK.Process(target=_child, args=(action, args, barrier, results, index))
        for index, (action, args) in enumerate(tasks)
    ]
    for child in children:
        child.start()
    collected = dict((index, (status, value)) for index, status, value in
                     (results.get(timeout=120) for _ in children))  # fmt: skip
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    return [collected[index] for index in range(len(tasks))]


def act_create_study(url: str, prefix: str, name: str) -> str:
    return TrackingDatabase.from_url(url, prefix=prefix).studies.create(name).id


def act_create_run(url: str, prefix: str, workspace: str) -> str:
    return TrackingDatabase.from_url(url, prefix=prefix).runs.create("s", workspace, ["q"]).id


def act_join_run(url: str, prefix: str, name: str) -> tuple[str, list[str]]:
    db = TrackingDatabase.from_url(url, prefix=prefix)
    worker = db.logical_workers.create(name, ["q"])
    return worker.id, db.logical_workers.attach_to_active_runs(worker.id)


def act_upsert(url: str, prefix: str, pid: int) -> str:
    db = TrackingDatabase.from_url(url, prefix=prefix)
    return db.physical_workers.create("w@host", pid=pid, host="host").id


def act_events(url: str, prefix: str, batches: list[list[TaskEvent]]) -> int:
    db = TrackingDatabase.from_url(url, prefix=prefix)
    for batch in batches:
        assert db.runs.record_events(batch) == []
    return len(batches)


def act_inherited(db: TrackingDatabase, workspace: str) -> str:
    return db.runs.create("forked", workspace, ["q"]).id


# --------------------------------------------------------------------------- concurrency
def test_16_processes_create_one_study(sqlite_url: str, prefix: str) -> None:
    outcomes = in_processes([(act_create_study, (sqlite_url, prefix, "2024"))] * 16)
    assert {status for status, _ in outcomes} == {"ok"}
    assert len({study_id for _, study_id in outcomes}) == 1
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    assert [s.id for s in db.studies.get_all()] == [outcomes[0][1]]


def test_16_processes_create_one_run_per_workspace(sqlite_url: str, prefix: str) -> None:
    outcomes = in_processes([(act_create_run, (sqlite_url, prefix, "/ws/same"))] * 16)
    winners = [value for status, value in outcomes if status == "ok"]
    assert len(winners) == 1, outcomes
    assert [value for status, value in outcomes if status == "duplicate"] == winners * 15
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    assert [r.id for r in db.runs.get_all()] == winners
    assert db.studies.get("s").runs == tuple(winners)
    assert rows_of(sqlite_url, prefix)["run_queue"] == 1


def test_32_processes_attach_their_workers_to_one_run(sqlite_url: str, prefix: str) -> None:
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    run = db.runs.create("s", "/ws", ["q"])
    outcomes = in_processes([(act_join_run, (sqlite_url, prefix, f"w{i}")) for i in range(32)])
    assert {status for status, _ in outcomes} == {"ok"}, outcomes
    worker_ids = {worker_id for _, (worker_id, _) in outcomes}
    assert len(worker_ids) == 32
    assert all(attached == [run.id] for _, (_, attached) in outcomes)
    assert set(db.runs.get(run.id).workers) == worker_ids
    for worker in db.logical_workers.get_all({"queues": "q"}):
        assert worker.runs == (run.id,)
    assert len(db.runs.get_all({"workers": sorted(worker_ids)})) == 1
    assert db.store.find_dangling() == []


def test_workers_racing_with_the_creation_of_their_run(sqlite_url: str, prefix: str) -> None:
    tasks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (act_join_run, (sqlite_url, prefix, f"w{i}")) for i in range(16)
    ]
    tasks.insert(8, (act_create_run, (sqlite_url, prefix, "/ws/race")))
    outcomes = in_processes(tasks)
    assert {status for status, _ in outcomes} == {"ok"}, [o for o in outcomes if o[0] != "ok"]
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    # Whichever came first, every worker ends up attached exactly once, on both sides.
    run = db.runs.get("/ws/race")
    assert len(run.workers) == 16
    assert all(w.runs == (run.id,) for w in db.logical_workers.get_all())


def test_task_events_from_8_processes_count_exactly(sqlite_url: str, prefix: str) -> None:
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    run = db.runs.create("s", "/ws", ["q"])
    db.runs.change_publishing(run.id, +1)
    tasks = [f"t{i}" for i in range(400)]
    kinds = (TaskEventKind.PUBLISHED, TaskEventKind.STARTED, TaskEventKind.SUCCEEDED)
    # Each process reports every step of its share of tasks; the publisher's reports of the same
    # tasks arrive from two other processes too, in a shuffled order of batches.
    rng = random.Random(7)
    per_process: list[list[list[TaskEvent]]] = []
    for index in range(8):
        mine = tasks[index::8]
        events = [TaskEvent(run.id, t, kind, "q") for t in mine for kind in kinds]
        echoes = [TaskEvent(run.id, t, TaskEventKind.PUBLISHED, "q") for t in tasks[index::4]]
        batches = [events[i : i + 7] for i in range(0, len(events), 7)]
        batches += [echoes[i : i + 13] for i in range(0, len(echoes), 13)]
        rng.shuffle(batches)
        per_process.append(batches)
    outcomes = in_processes([(act_events, (sqlite_url, prefix, b)) for b in per_process])
    assert {status for status, _ in outcomes} == {"ok"}, outcomes
    mid = db.runs.get(run.id)
    assert mid.counters == {
        "queued": 400,
        "started": 400,
        "succeeded": 400,
        "failed": 0,
        "retried": 0,
        "revoked": 0,
        "lost": 0,
    }
    assert mid.status is RunStatus.RUNNING  # a launch is still publishing
    assert db.runs.change_publishing(run.id, -1) is RunStatus.COMPLETED
    assert rows_of(sqlite_url, prefix)["task"] == 400


def test_16_upserts_of_one_worker_with_different_pids(sqlite_url: str, prefix: str) -> None:
    outcomes = in_processes([(act_upsert, (sqlite_url, prefix, 1000 + i)) for i in range(16)])
    assert {status for status, _ in outcomes} == {"ok"}, outcomes
    assert len({worker_id for _, worker_id in outcomes}) == 1
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    (worker,) = db.physical_workers.get_all()
    assert worker.restart_count == 15
    assert db.physical_workers.get_all({"host": "host", "status": "running"}) == [worker]


def test_a_forked_child_opens_its_own_connection(ledger: TrackingDatabase) -> None:
    ledger.runs.create("forked", "/ws/parent", ["q"])  # the parent holds a connection now
    outcomes = in_processes([(act_inherited, (ledger, f"/ws/child-{i}")) for i in range(4)])
    assert {status for status, _ in outcomes} == {"ok"}, outcomes
    # The parent's connection still works and sees every child's run.
    assert len(ledger.runs.get_all({"study_id": ledger.studies.get("forked").id})) == 5


def test_fork_while_another_thread_holds_a_connection(ledger: TrackingDatabase) -> None:
    """The child must neither use nor close the connection of a thread it did not inherit."""
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        ledger.studies.create("from-a-thread")  # this thread's own connection
        opened.set()
        release.wait(60)
        ledger.studies.create("after-the-fork")  # still usable once the children are gone

    holder = threading.Thread(target=hold)
    holder.start()
    assert opened.wait(30)
    outcomes = in_processes([(act_inherited, (ledger, f"/ws/child-{i}")) for i in range(4)])
    release.set()
    holder.join(60)
    assert {status for status, _ in outcomes} == {"ok"}, outcomes
    assert {s.name for s in ledger.studies.get_all()} == {
        "from-a-thread",
        "after-the-fork",
        "forked",
    }
    assert ledger.runs.count() == 4


def test_threads_share_a_store_with_a_connection_each(ledger: TrackingDatabase) -> None:
    run = ledger.runs.create("s", "/ws", ["q"])
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for step in range(20):
                ledger.runs.record_events(
                    [TaskEvent(run.id, f"t{index}-{step}", TaskEventKind.PUBLISHED, "q")]
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert ledger.runs.get(run.id).tasks_queued == 160


def test_a_writer_waits_for_the_lock(ledger: TrackingDatabase, sqlite_url: str) -> None:
    ledger.studies.create("warm-up")
    blocker = raw(sqlite_url)
    blocker.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(0.5, lambda: blocker.execute("COMMIT"))
    releaser.start()
    started = time.monotonic()
    try:
        assert ledger.studies.create("after-the-lock").name == "after-the-lock"
    finally:
        releaser.join()
        blocker.close()
    assert time.monotonic() - started >= 0.4


def test_a_lock_held_too_long_is_store_unavailable(
    sqlite_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "BUSY_TIMEOUT", 0.2)
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    db.studies.create("warm-up")
    blocker = raw(sqlite_url)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailableError, match="locked"):
            db.studies.create("blocked")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert db.studies.get_all({"name": "blocked"}) == []


# --------------------------------------------------------------------------- the file
def test_wal_mode_foreign_keys_and_schema_version(
    ledger: TrackingDatabase, sqlite_url: str
) -> None:
    ledger.runs.create("s", "/ws", ["q"])
    with closing(raw(sqlite_url)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT value FROM schema_info WHERE key = 'version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
    store = ledger.store
    assert isinstance(store, SqliteStore)
    conn = store._db.get()
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000


def test_every_filter_column_is_indexed(ledger: TrackingDatabase, sqlite_url: str) -> None:
    ledger.studies.create("s")
    wanted = {
        "study": {"name"},
        "run": {"study_id", "status", "workspace"},
        "run_queue": {"queue"},
        "run_worker": {"worker_id"},
        "logical_worker": {"name"},
        "lw_queue": {"queue"},
        "physical_worker": {"name", "status", "host", "logical_worker_id", "job_id"},
    }
    with closing(raw(sqlite_url)) as conn:
        for table, columns in wanted.items():
            leading = set()
            for _, index, *_ in conn.execute(f"PRAGMA index_list({table})"):
                names = [row[2] for row in conn.execute(f"PRAGMA index_info({index})")]
                assert names[0] == "ns"  # every index is scoped to one prefix first
                leading.add(names[1])
            assert columns <= leading, (table, leading)


def test_info_counts_and_recent(ledger: TrackingDatabase, sqlite_url: str) -> None:
    ledger.logical_workers.create("w", ["q"])
    runs = [ledger.runs.create("s", f"/ws/{i}", ["q"]) for i in range(7)]
    ledger.physical_workers.create("w@n", pid=1)
    info = ledger.info(recent=3)
    assert info["version"] == __version__
    assert info["backend"] == "sqlite"
    assert info["url"] == sqlite_url
    assert info["counts"] == {"study": 1, "run": 7, "logical_worker": 1, "physical_worker": 1}
    assert [r["id"] for r in info["recent_runs"]] == [r.id for r in reversed(runs[-3:])]
    assert info["server"]["server_version"] == sqlite3.sqlite_version
    assert info["server"]["path"] == sqlite_url[len("sqlite:///") :]
    assert info["server"]["journal_mode"] == "wal"
    ledger.runs.delete(runs[-1].id)
    assert ledger.info(recent=1)["recent_runs"][0]["id"] == runs[-2].id


def test_two_prefixes_in_one_file_are_independent(sqlite_url: str, prefix: str) -> None:
    one = TrackingDatabase.from_url(sqlite_url, prefix=prefix + "_a")
    two = TrackingDatabase.from_url(sqlite_url, prefix=prefix + "_b")
    lw = one.logical_workers.create("w", ["q"])
    one.runs.create("s", "/ws/1", ["q"])
    assert two.runs.get_all() == []
    assert two.studies.get_all() == []
    run = two.runs.create("s", "/ws/1", ["q"])  # same workspace and study name, other ledger
    assert run.workers == ()  # the other ledger's worker is not seen
    two.logical_workers.create("w", ["q"])  # same deterministic id, other ledger
    two.delete_everything()
    assert rows_of(sqlite_url, prefix + "_b") == dict.fromkeys(TABLES, 0)
    assert len(one.runs.get_all()) == 1
    assert one.logical_workers.get(lw.id).runs == (one.runs.get("/ws/1").id,)


def test_delete_everything_empties_the_prefix(ledger: TrackingDatabase, sqlite_url: str) -> None:
    lw = ledger.logical_workers.create("w", ["q"])
    run = ledger.runs.create("s", "/ws/1", ["q"])
    ledger.runs.record_events([TaskEvent(run.id, "t", TaskEventKind.PUBLISHED, "q")])
    ledger.physical_workers.create("w@n", pid=1, logical_worker_id=lw.id)
    ledger.delete_everything()
    prefix = ledger.store.prefix  # type: ignore[attr-defined]
    assert rows_of(sqlite_url, prefix) == dict.fromkeys(TABLES, 0)


def test_deleting_a_run_removes_its_task_records(ledger: TrackingDatabase, sqlite_url: str) -> None:
    run = ledger.runs.create("s", "/ws", ["q"])
    ledger.runs.record_events([TaskEvent(run.id, "t", TaskEventKind.PUBLISHED, "q")])
    prefix = ledger.store.prefix  # type: ignore[attr-defined]
    assert rows_of(sqlite_url, prefix)["task"] == 1
    ledger.runs.delete(run.id)
    assert rows_of(sqlite_url, prefix)["task"] == 0


def test_gc_repairs_rows_removed_by_hand(ledger: TrackingDatabase, sqlite_url: str) -> None:
    lw = ledger.logical_workers.create("w", ["q"])
    pw = ledger.physical_workers.create("w@n", pid=1, logical_worker_id=lw.id)
    run = ledger.runs.create("s", "/ws", ["q"])
    other = ledger.runs.create("s", "/ws2", ["q"])
    with closing(raw(sqlite_url)) as conn:  # foreign keys are off, as in the sqlite3 shell
        conn.execute("DELETE FROM run WHERE id = ?", (other.id,))
        conn.execute("DELETE FROM logical_worker WHERE id = ?", (lw.id,))
    # Still writable while broken: a heartbeat does not trip over the dangling reference.
    assert ledger.physical_workers.heartbeat(pw.id) is True
    report = ledger.collect_garbage(timedelta(days=1))
    described = "\n".join(report["dangling"])
    assert f"run {run.id}: workers -> missing {lw.id}" in described
    assert f"physical_worker {pw.id}: logical_worker_id -> missing {lw.id}" in described
    assert ledger.runs.get(run.id).workers == ()
    assert ledger.studies.get("s").runs == (run.id,)
    assert ledger.physical_workers.get(pw.id).logical_worker_id is None
    assert [r.id for r in ledger.runs.get_all({"queues": "q"})] == [run.id]
    assert ledger.collect_garbage(timedelta(days=1))["dangling"] == []
    prefix = ledger.store.prefix  # type: ignore[attr-defined]
    assert rows_of(sqlite_url, prefix)["run_queue"] == 1
    assert rows_of(sqlite_url, prefix)["lw_queue"] == 0


def test_run_numbers_are_never_reused(ledger: TrackingDatabase, sqlite_url: str) -> None:
    first = ledger.runs.create("s", "/ws/1", ["q"])
    second = ledger.runs.create("s", "/ws/2", ["q"])
    ledger.runs.delete(second.id)
    third = ledger.runs.create("s", "/ws/3", ["q"])
    assert (first.id, second.id, third.id) == ("r1", "r2", "r3")
    with closing(raw(sqlite_url)) as conn:  # a counter wound back by hand
        conn.execute("UPDATE sequence SET last = 0")
    assert ledger.runs.create("s", "/ws/4", ["q"]).id == "r2"
    assert [r.id for r in ledger.runs.get_all()] == ["r1", "r2", "r3"]
    assert ledger.store.recent_run_ids(2) == ["r3", "r2"]


def test_export_import_between_prefixes_of_one_file(sqlite_url: str, prefix: str) -> None:
    source = TrackingDatabase.from_url(sqlite_url, prefix=prefix + "_src")
    target = TrackingDatabase.from_url(sqlite_url, prefix=prefix + "_dst")
    lw = source.logical_workers.create("sim", ["sim"])
    source.physical_workers.create("sim@n1", pid=11, host="n1", logical_worker_id=lw.id)
    run = source.runs.create("sweep", "/ws/ü 1", ["sim"], parameters={"lr": 0.5})
    source.runs.record_events(
        [TaskEvent(run.id, "t1", kind, "sim") for kind in TaskEventKind if kind.value != "failed"]
    )
    document = json.loads(json.dumps(source.export_run(run.id)))
    restored = target.import_run(document)
    original = source.runs.get(run.id)
    assert restored.id == original.id  # the same id lives in two prefixes of one file
    assert restored.counters == original.counters
    assert restored.workers == original.workers == (lw.id,)
    assert target.physical_workers.get("sim@n1").logical_worker_id == lw.id
    with pytest.raises(DuplicateEntityError):
        target.import_run(document)


def test_newer_schema_is_refused(sqlite_url: str, prefix: str) -> None:
    TrackingDatabase.from_url(sqlite_url, prefix=prefix).studies.create("s")
    with closing(raw(sqlite_url)) as conn:
        conn.execute(
            "UPDATE schema_info SET value = ? WHERE key = 'version'", (SCHEMA_VERSION + 1,)
        )
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    with pytest.raises(TrackingError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        db.studies.get_all()


def test_newer_record_version_is_refused(ledger: TrackingDatabase, sqlite_url: str) -> None:
    run = ledger.runs.create("s", "/ws/1", ["q"])
    with closing(raw(sqlite_url)) as conn:
        (text,) = conn.execute("SELECT fields FROM run WHERE id = ?", (run.id,)).fetchone()
        fields = json.loads(text)
        assert fields["v"] == "2" and fields["workspace"] == '"/ws/1"'
        fields["v"] = "3"
        conn.execute("UPDATE run SET fields = ? WHERE id = ?", (json.dumps(fields), run.id))
    with pytest.raises(TrackingError, match="upgrade"):
        ledger.runs.get(run.id)


# --------------------------------------------------------------------------- URLs and errors
@pytest.mark.parametrize(
    "where",
    ["missing/dir/tracking.db", "a-file/tracking.db", "a-dir"],
)
def test_unusable_path_is_store_unavailable(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-dir").mkdir()
    url = f"sqlite:///{tmp_path / where}"
    db = TrackingDatabase.from_url(url)  # opening is lazy, like a Redis client
    with pytest.raises(StoreUnavailableError) as caught:
        db.studies.get_all()
    assert url in str(caught.value)
    with pytest.raises(StoreUnavailableError):
        db.store.ping()


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        StoreUnavailableError, match=f"directory {tmp_path / 'nope'} does not exist"
    ):
        TrackingDatabase.from_url(f"sqlite:///{tmp_path / 'nope' / 'x.db'}").store.ping()


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the tables you are looking for" * 100)
    with pytest.raises(StoreUnavailableError, match="not a database"):
        TrackingDatabase.from_url(f"sqlite:///{path}").studies.create("s")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_file_is_store_unavailable(sqlite_url: str) -> None:  # pragma: no cover
    TrackingDatabase.from_url(sqlite_url).studies.create("s")
    path = Path(sqlite_url[len("sqlite:///") :])
    path.parent.chmod(0o500)
    path.chmod(0o400)
    try:
        with pytest.raises(StoreUnavailableError):
            TrackingDatabase.from_url(sqlite_url).studies.create("t")
    finally:
        path.parent.chmod(0o700)
        path.chmod(0o600)


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///ledger.db")
    assert isinstance(relative, SqliteStore)
    assert relative.path == str(tmp_path / "ledger.db")
    relative.ping()
    monkeypatch.chdir("/")  # resolved once: a later chdir changes nothing
    assert TrackingDatabase(relative).studies.create("s").name == "s"
    absolute = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == relative.path
    assert [s.name for s in TrackingDatabase(absolute).studies.get_all()] == ["s"]


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://host/x.db", "sqlite:x.db"]
)
def test_bad_sqlite_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRecordError, match="sqlite:///"):
        open_store(url)


@pytest.mark.parametrize("bad_prefix", ["", "a{b}", "has space", "x" * 101])
def test_bad_prefix_is_refused(sqlite_url: str, bad_prefix: str) -> None:
    with pytest.raises(InvalidRecordError, match="prefix"):
        TrackingDatabase.from_url(sqlite_url, prefix=bad_prefix)


def test_values_with_nul_characters_are_matched_exactly(ledger: TrackingDatabase) -> None:
    tricky = ledger.runs.create("\x00nul", "a\x00b", ["q\x00"])
    plain = ledger.runs.create("n", "a", ["q"])
    assert ledger.studies.get_all({"name": "\x00nul"})[0].runs == (tricky.id,)
    assert ledger.runs.get("a\x00b") == tricky
    assert ledger.runs.get("a") == plain
    assert ledger.runs.get_all({"queues": "q\x00"}) == [tricky]
    assert ledger.runs.get_all({"queues": "q"}) == [plain]
    worker = ledger.logical_workers.create("w\x00", ["q\x00"])
    assert ledger.logical_workers.attach_to_active_runs(worker.id) == [tricky.id]
    assert ledger.runs.get(tricky.id).workers == (worker.id,)


def test_filters_and_reads_longer_than_one_statement(ledger: TrackingDatabase) -> None:
    runs = [ledger.runs.create(f"s{i % 3}", f"/ws/{i}", [f"q{i}"]) for i in range(450)]
    assert ledger.runs.get_all() == runs
    queues = [f"q{i}" for i in range(0, 450, 2)] + [f"none{i}" for i in range(300)]
    study = ledger.studies.get("s0")
    both = ledger.runs.get_all({"queues": queues, "study_id": study.id, "status": "initialized"})
    assert both == [run for index, run in enumerate(runs) if index % 6 == 0]
    assert ledger.runs.delete_all() == 450


# --------------------------------------------------------------------------- migration
V1_SCHEMA = Path(__file__).parent / "data" / "sqlite_schema_v1.sql"


def test_a_version_1_file_is_migrated_in_place(sqlite_url: str, prefix: str) -> None:
    """A wave-1 ledger (one state letter per task) opens as the current version: its tasks
    become task records, the task indexes of schema 3 are built, its runs go on counting each
    task once, and the version is written."""
    path = sqlite_url[len("sqlite:///") :]
    run_fields = {
        "v": "1",
        "study_id": '"s1"',
        "workspace": '"/ws/old"',
        "status": '"RUNNING"',
        "created_at": "1700000000000000",
        "updated_at": "1700000000000000",
        "queues": '["q"]',
        "tasks_queued": "3",
        "tasks_started": "2",
        "tasks_succeeded": "1",
    }
    with closing(raw(sqlite_url)) as conn:
        conn.executescript(V1_SCHEMA.read_text())
        conn.execute(
            "INSERT INTO study (ns, id, name, fields) VALUES (?, 's1', 'old', ?)",
            (prefix, json.dumps({"v": "1", "name": '"old"', "created_at": "1700000000000000"})),
        )
        conn.execute(
            "INSERT INTO run (ns, id, seq, study_id, workspace, status, fields) "
            "VALUES (?, 'r1', 1, 's1', '/ws/old', 'RUNNING', ?)",
            (prefix, json.dumps(run_fields)),
        )
        conn.execute("INSERT INTO run_queue (ns, run_id, queue) VALUES (?, 'r1', 'q')", (prefix,))
        conn.execute("INSERT INTO sequence (ns, name, last) VALUES (?, 'run', 1)", (prefix,))
        conn.executemany(
            "INSERT INTO task_state (ns, run_id, task_id, state) VALUES (?, 'r1', ?, ?)",
            [(prefix, "done", "S"), (prefix, "busy", "s"), (prefix, "waiting", "q")],
        )
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    tasks = {task.id: task for task in db.tasks.get_all({"run_id": "r1"})}
    assert {k: (t.state, t.attempts) for k, t in tasks.items()} == {
        "done": (TaskState.SUCCEEDED, 1),
        "busy": (TaskState.STARTED, 1),
        "waiting": (TaskState.QUEUED, 0),
    }
    with closing(raw(sqlite_url)) as conn:
        assert conn.execute("SELECT value FROM schema_info").fetchone() == (str(SCHEMA_VERSION),)
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "task_state" not in names and {"task", "run_waiting"} <= names
        assert {"task_by_ns_state", "task_by_name", "task_by_queue"} <= names  # schema 3
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM task WHERE ns = ? AND name = ?", (prefix, "x")
        ).fetchall()
        assert "task_by_name" in str(plan)
    events = [
        TaskEvent("r1", "busy", TaskEventKind.SUCCEEDED),
        TaskEvent("r1", "waiting", TaskEventKind.STARTED),
        TaskEvent("r1", "waiting", TaskEventKind.SUCCEEDED),
    ]
    db.runs.record_events(events)
    run = db.runs.get("r1")
    assert (run.tasks_queued, run.tasks_started, run.tasks_succeeded) == (3, 3, 3)
    assert run.status is RunStatus.COMPLETED
    assert os.path.getsize(path) > 0


V3_SCHEMA = Path(__file__).parent / "data" / "sqlite_schema_v3.sql"


def _v3_file(sqlite_url: str, prefix: str) -> None:
    """A schema-3 file with one logical and one physical worker, as version 3 wrote them."""
    worker = {"v": "1", "name": '"sim@node7"', "status": '"STOPPED"', "created_at": "1"}
    with closing(raw(sqlite_url)) as conn:
        conn.executescript(V3_SCHEMA.read_text())
        conn.execute(
            "INSERT INTO physical_worker (ns, id, name, status, host, fields) "
            "VALUES (?, 'p1', 'sim@node7', 'STOPPED', NULL, ?)",
            (prefix, json.dumps(worker)),
        )


def test_a_version_3_file_gets_the_job_column_in_place(sqlite_url: str, prefix: str) -> None:
    """Schema 4 adds physical_worker.job_id and its index; the workers recorded before keep
    every field and have no job, and new workers are found by their job."""
    _v3_file(sqlite_url, prefix)
    db = TrackingDatabase.from_url(sqlite_url, prefix=prefix)
    old = db.physical_workers.get("sim@node7")
    assert (old.id, old.status, old.job_id) == ("p1", WorkerStatus.STOPPED, None)
    logical = db.logical_workers.create("sim", ["q"])
    db.physical_workers.create("sim@node8", logical_worker_id=logical.id, job_id="77")
    assert [w.name for w in db.physical_workers.get_all({"job_id": "77"})] == ["sim@node8"]
    with closing(raw(sqlite_url)) as conn:
        assert conn.execute("SELECT value FROM schema_info").fetchone() == (str(SCHEMA_VERSION),)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(physical_worker)")}
        assert "job_id" in columns
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM physical_worker WHERE ns = ? AND job_id = ?",
            (prefix, "77"),
        ).fetchall()
        assert "physical_worker_by_job" in str(plan)


def test_the_version_4_migration_is_idempotent(sqlite_url: str, prefix: str) -> None:
    """Run again on a file that has the column (an interrupted upgrade retried, or two
    processes of this version opening it): nothing fails, nothing changes."""
    from merlin_tracking.stores.sqlite import schema

    _v3_file(sqlite_url, prefix)
    TrackingDatabase.from_url(sqlite_url, prefix=prefix).physical_workers.get("sim@node7")
    with closing(raw(sqlite_url)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        schema.MIGRATIONS[3](conn)
        conn.execute("COMMIT")
        rows = conn.execute("SELECT id, job_id FROM physical_worker").fetchall()
    assert rows == [("p1", None)]
