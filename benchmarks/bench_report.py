#!/usr/bin/env python3
"""How long ``merlin-tracking report`` takes for a run of 100,000 tasks, and how big the file is.

Fills one run with ``--tasks`` task records (published, started and ended on 16 workers, 1% of
them failed) on a private ``redis-server`` and on an SQLite file, then times the whole command
(``report RUN -o FILE`` in-process: reading the tasks, drawing the charts, writing the file).
Targets: under 5 s and under 5 MB. A benchmark, not a test: the numbers depend on the machine.

    python benchmarks/bench_report.py            # writes the "report" section of docs/benchmarks.md
    python benchmarks/bench_report.py --quick    # 10,000 tasks; prints, writes nothing
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import git_state, load_average, machine_facts, merge_section, private_redis
from click.testing import CliRunner

from merlin_tracking import TrackingDatabase
from merlin_tracking.cli import cli
from merlin_tracking.records.events import TaskEvent, TaskEventKind

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- report:start -->", "<!-- report:end -->"
WORKERS = 16
BATCH = 2000


def fill(db: TrackingDatabase, tasks: int) -> str:
    run = db.runs.create("bench", "/bench/report", ["sim"])
    t0 = int(time.time() * 1_000_000) - tasks * 1000
    events: list[TaskEvent] = []
    for i in range(tasks):
        worker = f"sim{i % WORKERS}@node{i % WORKERS // 4}"
        start = t0 + (i // WORKERS) * 16_000
        task = f"task-{i:06d}"
        events.append(TaskEvent(run.id, task, TaskEventKind.PUBLISHED, "sim", "sim.step", at=t0))
        if i % 100 == 7:
            events.append(TaskEvent(run.id, task, TaskEventKind.STARTED, worker=worker, at=start))
            events.append(
                TaskEvent(
                    run.id, task, TaskEventKind.FAILED, worker=worker, at=start + 9000,
                    error=f"ValueError: sample {i} diverged",
                )
            )  # fmt: skip
        else:
            events.append(
                TaskEvent(
                    run.id, task, TaskEventKind.RAN, worker=worker, at=start,
                    ended=start + 8000 + (i % 13) * 500,
                )
            )  # fmt: skip
        if len(events) >= BATCH:
            db.runs.record_events(events)
            events = []
    if events:
        db.runs.record_events(events)
    return run.id


def measure(url: str, prefix: str, tasks: int, out: Path) -> tuple[float, float, float]:
    """(seconds to fill, seconds for the report command, MB written)."""
    db = TrackingDatabase.from_url(url, prefix=prefix)
    began = time.perf_counter()
    run_id = fill(db, tasks)
    filled = time.perf_counter() - began
    began = time.perf_counter()
    result = CliRunner().invoke(
        cli, ["--url", url, "--prefix", prefix, "report", run_id, "-o", str(out)]
    )
    took = time.perf_counter() - began
    assert result.exit_code == 0, result.output
    return filled, took, out.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks; print only")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    args = parser.parse_args()
    tasks = 10_000 if args.quick else args.tasks
    facts = machine_facts()
    load_start = load_average()
    began = time.perf_counter()
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="mt-bench-report-"))
    with private_redis(args.redis_server) as redis_url:
        for store, url in (("redis", redis_url), ("sqlite", f"sqlite:///{workdir / 'ledger.db'}")):
            filled, took, size = measure(url, "bench_report", tasks, workdir / f"{store}.html")
            rows.append((store, filled, took, size))
            print(
                f"{store}: filled {tasks} tasks in {filled:.1f} s; report {took:.2f} s, {size:.2f} MB"
            )
    shutil.rmtree(workdir, ignore_errors=True)
    if args.quick:
        return
    lines = [
        START,
        "## Run report (`merlin-tracking report`)",
        "",
        "`python benchmarks/bench_report.py`: one run of "
        f"{tasks:,} task records on {WORKERS} workers (1% failed); the whole `report RUN -o FILE` "
        "command, in-process: reading every task record, drawing the SVG charts, writing the file. "
        "Targets: < 5 s and < 5 MB.",
        "",
        "| store | tasks | report seconds | file MB | (filling the ledger, s) |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {s} | {tasks:,} | {t:.2f} | {m:.2f} | {f:.1f} |" for s, f, t, m in rows),
        "",
        f"Machine: {facts.get('nproc', '?')} cores, Python {facts.get('Python', '?')}, "
        f"load average {load_start} at start, "
        f"{load_average()} at end; {time.perf_counter() - began:.0f} s in all; {git_state()}.",
        END,
    ]
    merge_section(args.output, "\n".join(lines), START, END, first=False)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
