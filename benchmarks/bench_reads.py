#!/usr/bin/env python3
"""What "one answer for every reader" costs a read, and what a task record costs in memory.

Readers apply what time made due (``catch_up``: stale workers' tasks LOST, settled runs
COMPLETED) before they read. The script measures ``get`` and ``get_all`` through the managers
(catch-up included) against the same reads straight from the store (none), on a private
``redis-server`` and on an SQLite file, over a ledger of ``--runs`` runs (a tenth of them
settling, with live workers), plus the cost of a catch-up that has work to do (a stale worker
holding tasks). Then it fills runs of 2,000 tasks and reports Redis memory per task record.

    python benchmarks/bench_reads.py            # writes the "reads" section of docs/benchmarks.md
    python benchmarks/bench_reads.py --quick    # fewer runs; prints, writes nothing
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import git_state, load_average, machine_facts, merge_section, private_redis

from merlin_tracking import Run, TrackingDatabase
from merlin_tracking.records.events import COUNTED_AT_WORKER, TaskEvent, TaskEventKind

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- reads:start -->", "<!-- reads:end -->"


def populate(db: TrackingDatabase, runs: int) -> list[str]:
    for queue in ("sim", "post"):
        lw = db.logical_workers.create(f"w-{queue}", [queue])
        db.physical_workers.create(f"w-{queue}@node", pid=1, logical_worker_id=lw.id)
    ids = []
    for n in range(runs):
        run = db.runs.create("bench", f"/ws/bench/{n}", ["sim"])
        kind = TaskEventKind.RECEIVED if n % 10 == 0 else TaskEventKind.PUBLISHED
        flags = COUNTED_AT_WORKER if kind is TaskEventKind.RECEIVED else ""
        db.runs.record_events(
            [
                TaskEvent(run.id, f"{n}-a", kind, "sim", worker="w-sim@node", flags=flags),
                TaskEvent(run.id, f"{n}-a", TaskEventKind.RAN, worker="w-sim@node"),
            ],
            settle=3600,
        )
        ids.append(run.id)
    return ids


def timed(call: Callable[[], object], repeat: int) -> float:
    """Median microseconds of ``call``."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def server_commands(client: redis.Redis | None, call: Callable[[], object], repeat: int) -> str:
    if client is None:
        return "-"

    def total() -> int:
        return sum(int(v["calls"]) for k, v in client.info("commandstats").items())

    before = total()
    for _ in range(repeat):
        call()
    return f"{(total() - before - 1) / repeat:.1f}"


def read_rows(db: TrackingDatabase, ids: Sequence[str], client: redis.Redis | None) -> list[str]:
    store = db.store
    probe = ids[len(ids) // 2]
    reads: list[tuple[str, Callable[[], object], Callable[[], object], int]] = [
        ("get by id", lambda: store.fetch(Run, probe), lambda: db.runs.get(probe), 500),
        (
            "get_all status=RUNNING",
            lambda: store.query(Run, {"status": ["RUNNING"]}),
            lambda: db.runs.get_all({"status": "RUNNING"}),
            20,
        ),
        ("get_all (every run)", lambda: store.query(Run, {}), lambda: db.runs.get_all(), 5),
    ]
    rows = []
    for name, raw, fresh, repeat in reads:
        plain, caught = timed(raw, repeat), timed(fresh, repeat)
        rows.append(
            f"| {db.store.backend} | {name} | {plain:,.0f} | {caught:,.0f} | "
            f"{caught - plain:+,.0f} | {server_commands(client, raw, repeat)} | "
            f"{server_commands(client, fresh, repeat)} |"
        )
    return rows


def catch_up_with_work(db: TrackingDatabase, tasks: int) -> float:
    """Milliseconds of the catch-up that finds a stale worker holding ``tasks`` tasks."""
    lw = db.logical_workers.create("doomed", ["doomed"])
    db.physical_workers.create("doomed@node", pid=2, logical_worker_id=lw.id, stale_after=0.2)
    run = db.runs.create("bench", "/ws/bench/doomed", ["doomed"])
    db.runs.record_events(
        [
            TaskEvent(run.id, f"d{i}", TaskEventKind.STARTED, "doomed", worker="doomed@node")
            for i in range(tasks)
        ]
    )
    time.sleep(0.3)
    start = time.perf_counter()
    done = db.runs.catch_up()
    elapsed = (time.perf_counter() - start) * 1e3
    assert done.stalled_workers, "the doomed worker was not found stale"
    assert db.runs.get(run.id).tasks_lost == tasks
    return elapsed


def task_filter_rows(
    db: TrackingDatabase, client: redis.Redis | None, runs: int, tasks: int
) -> list[str]:
    """A filtered task read that matches 10 of ``runs * tasks`` records (5 runs with 2 failed
    tasks each), through the task index and (Redis) by scanning every record."""
    events: list[TaskEvent] = []
    for r in range(runs):
        run = db.runs.create("bench", f"/ws/bench/tasks/{r}", ["sim"])
        for n in range(tasks):
            task_id = f"{r:08x}-1c2d-4e5f-8a9b-{n:012x}"
            failed = r % (runs // 5) == 0 and n < 2
            events += [
                TaskEvent(run.id, task_id, TaskEventKind.PUBLISHED, "sim", name="app.sim"),
                TaskEvent(
                    run.id, task_id, TaskEventKind.FAILED if failed else TaskEventKind.RAN,
                    worker="sim@node7", error="ValueError: bench" if failed else None,
                ),
            ]  # fmt: skip
            if len(events) >= 1000:
                db.runs.record_events(events)
                events = []
    db.runs.record_events(events)
    filters = {"state": ["FAILED"]}
    matches = len(db.tasks.get_all({"state": "FAILED"}))
    assert matches == 10, matches
    reads: list[tuple[str, Callable[[], object]]] = [
        ("indexed", lambda: db.tasks.get_all({"state": "FAILED"}))
    ]
    scan = getattr(db.store, "_scan_tasks", None)
    if scan is not None:
        every = db.store.find_ids(Run, {})
        reads.append(("scan of every record", lambda: scan(every, filters, None)))
    rows = []
    for name, call in reads:
        micros = timed(call, 5)
        cmds = server_commands(client, call, 3)
        per_match = f"{float(cmds) / matches:.1f}" if cmds != "-" else "-"
        rows.append(
            f"| {db.store.backend} | {name} | {runs * tasks:,} | {matches} | "
            f"{micros / 1000:,.1f} | {cmds} | {per_match} |"
        )
    return rows


def bytes_per_task(url: str, tasks: int) -> float:
    db = TrackingDatabase.from_url(url, prefix="bench_memory")
    client = redis.Redis.from_url(url)
    run = db.runs.create("bench", "/ws/memory", ["sim"])
    now = run.created_at.timestamp()
    events = []
    for n in range(tasks):
        task_id = f"{n:08x}-1c2d-4e5f-8a9b-{n:012x}"  # Celery's uuid4 shape
        at = round((now + n * 0.01) * 1e6)
        events += [
            TaskEvent(run.id, task_id, TaskEventKind.PUBLISHED, "sim", name="app.simulate", at=at),
            TaskEvent(
                run.id, task_id, TaskEventKind.RAN, worker="sim@node7", at=at + 500_000,
                ended=at + 3_000_000,
            ),
        ]  # fmt: skip
    for start in range(0, len(events), 500):
        db.runs.record_events(events[start : start + 500])
    keys = list(client.scan_iter("{bench_memory}:run:" + run.id[1:] + ":*"))
    used = sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)
    return used / tasks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="300 runs; print, write nothing")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args(argv)
    runs = 300 if args.quick else args.runs
    loads = [load_average()]
    rows: list[str] = []
    lost_rows: list[str] = []
    filter_rows: list[str] = []
    with private_redis(args.redis_server) as url:
        client = redis.Redis.from_url(url)
        server_version = str(client.info("server").get("redis_version", "?"))
        folder = tempfile.mkdtemp(prefix="mt-bench-sqlite-")
        for db, raw in (
            (TrackingDatabase.from_url(url, prefix="bench_reads"), client),
            (TrackingDatabase.from_url(f"sqlite:///{folder}/ledger.db", prefix="bench"), None),
        ):
            ids = populate(db, runs)
            rows += read_rows(db, ids, raw)
            lost_rows.append(f"| {db.store.backend} | {catch_up_with_work(db, 200):.1f} |")
            filter_rows += task_filter_rows(db, raw, 20 if args.quick else 100, 500)
        memory = bytes_per_task(url, 2000)
        shutil.rmtree(folder, ignore_errors=True)
    loads.append(load_average())
    facts = machine_facts()
    report = "\n".join(
        [
            START,
            "## Reads and the catch-up (`benchmarks/bench_reads.py`)",
            "",
            "Every read through the managers first applies what time made due (stale workers'",
            "tasks LOST, settled runs COMPLETED), so any reader gets the same answer with no",
            "monitor process. On Redis the catch-up leads the read's first pipeline, so it",
            "costs no round trip. Medians in microseconds over "
            f"{runs:,} runs (a tenth of them settling), raw store read vs manager read:",
            "",
            "| store | read | raw µs | with catch-up µs | difference | server cmds raw | server cmds with catch-up |",
            "|---|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "A catch-up with work to do (a stale worker holding 200 started tasks: all LOST, "
            "the run judged again), milliseconds:",
            "",
            "| store | catch-up ms |",
            "|---|---:|",
            *lost_rows,
            "",
            "A task filter that matches 10 records (`db.tasks.get_all({'state': 'FAILED'})`, "
            "catch-up included), through the task index and, on Redis, by scanning every "
            "record as before the index; milliseconds (median of 5) and server commands:",
            "",
            "| store | read | task records | matches | ms | server cmds | server cmds per match |",
            "|---|---|---:|---:|---:|---:|---:|",
            *filter_rows,
            "",
            f"Memory: a finished task record costs **{memory:.0f} bytes** in Redis (a run of "
            "2,000 tasks with Celery's uuid4 ids, its name dictionary and indexes included; "
            "goal ≤ 120 B).",
            "",
            f"Machine: {facts.get('CPU', '?')}, {facts.get('nproc', '?')} cores, Python "
            f"{facts.get('Python', '?')}, redis-server {server_version}, "
            f"{git_state()}; load {loads[0]} at start, {loads[1]} at end; "
            f"{datetime.now(timezone.utc):%Y-%m-%d}.",
            END,
        ]
    )
    print(report)
    if not args.quick:
        merge_section(Path(args.output), report, START, END, first=False)


if __name__ == "__main__":
    main()
