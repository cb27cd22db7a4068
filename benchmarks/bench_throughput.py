#!/usr/bin/env python3
"""Throughput of no-op tasks through a real ``celery worker`` with tracking on vs off.

For each pool (solo, and prefork with ``--concurrency 2``) and each mode (tracking on / off) the
script publishes ``--tasks`` no-op tasks (tracking on: one run through ``launch_study``; off: the
same group through ``apply_async`` with ``tracking_enabled = False`` and ``MERLIN_TRACKING=0``),
then starts ``celery -A throughput_app worker`` as a subprocess (tracked through the package's
``celery.commands`` entry point when on) and waits until every task is done. Throughput is
tasks / (end of the last task - start of the first task), stamped by the tasks themselves, so
worker start-up is left out; tracking on also waits until the run is COMPLETED with exact
counters and reports how long after the last task that happened. Modes alternate within each
repetition to cancel drift.

Everything runs against a private ``redis-server`` on a free port of 127.0.0.1 (broker, result
backend and tracking store), flushed before each measurement and stopped at the end. Redis
commands per task come from ``INFO commandstats`` deltas (commands run by Lua scripts
included), less the benchmark's own commands (the tasks' counter, polling).

    python benchmarks/bench_throughput.py            # 5,000 tasks x 7 reps; updates docs/benchmarks.md
    python benchmarks/bench_throughput.py --quick    # 1,000 tasks x 1 rep; prints, writes nothing
    python benchmarks/bench_throughput.py --help     # every option
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import celery
import kombu
import redis

try:  # optional: CPU time of the worker processes per task
    import psutil  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover
    psutil = None

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))

from bench_support import git_state, load_average, machine_facts, merge_section, private_redis  # noqa: E402 - sibling module; run as a file

from merlin_tracking import Run, RunStatus, TrackingDatabase  # noqa: E402

APP_MODULE = "throughput_app"
QUEUE = "bench"
STUDY = "throughput_bench"
TARGET_RATIO = 0.9
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
SECTION_START = "<!-- throughput:start -->"
SECTION_END = "<!-- throughput:end -->"
# Profiling findings inside the section: kept across re-runs unless --notes replaces them.
NOTES_START = "<!-- throughput:notes:start -->"
NOTES_END = "<!-- throughput:notes:end -->"
# Keys the tasks use to count themselves (see throughput_app.py).
DONE_KEY = "bench:done"
FIRST_KEY = "bench:first_started"
LAST_KEY = "bench:last_finished"
# Commands that only the benchmark's own probing sends (never Celery nor merlin_tracking).
PROBE_ONLY_COMMANDS = ("info", "config", "flushall")

T = TypeVar("T")


class Probe:
    """The benchmark's side client: flushing, stats, polling (its commands are counted)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        if self.client.connection_pool.connection_kwargs.get("port") == 6379:
            raise RuntimeError("refusing to benchmark against port 6379")
        self.sent: Counter[str] = Counter()

    def reset(self) -> None:
        """Empty the private server and zero its command statistics."""
        self.client.flushall()
        self.client.config_resetstat()
        self.sent.clear()

    def command_calls(self) -> Counter[str]:
        calls: Counter[str] = Counter()
        for name, values in self.client.info("commandstats").items():
            calls[name.removeprefix("cmdstat_")] = int(values["calls"])
        return calls

    def done(self) -> int:
        self.sent["get"] += 1
        return int(self.client.get(DONE_KEY) or 0)

    def stamps(self) -> tuple[float, float]:
        # The last task counts itself (INCR) a moment before it stamps its end time: poll.
        deadline = time.monotonic() + 5
        while True:
            self.sent["mget"] += 1
            first, last = self.client.mget(FIRST_KEY, LAST_KEY)
            if first is not None and last is not None:
                return float(first), float(last)
            if time.monotonic() > deadline:
                raise RuntimeError("the tasks did not stamp their start and end times")
            time.sleep(0.005)

    def cpu_seconds(self) -> float:
        """CPU time redis-server has used so far (user + system)."""
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def server_version(self) -> str:
        return str(self.client.info("server")["redis_version"])


# --------------------------------------------------------------------------- one measurement
@dataclass(frozen=True)
class Config:
    pool: str
    tracking: bool
    concurrency: int

    @property
    def label(self) -> str:
        pool = self.pool if self.pool == "solo" else f"{self.pool} -c {self.concurrency}"
        return f"{pool}, tracking {'on' if self.tracking else 'off'}"


@dataclass(frozen=True)
class CpuCost:
    """CPU milliseconds per task, from the first observed task to the last (nan if unknown)."""

    worker_ms: float  # the worker's main process and its pool children
    redis_ms: float  # redis-server


@dataclass
class Measurement:
    config: Config
    repetition: int
    tasks: int
    publish_s: float
    startup_s: float  # worker Popen -> first task started
    consume_s: float  # first task started -> last task finished
    converge_s: float | None  # last task finished -> run COMPLETED with exact counters
    commands: Counter[str]  # server commands, the benchmark's own taken out
    cpu: CpuCost  # CPU time per task while the tasks ran
    load: float  # 1-minute load average when the measurement started (other work on the box)

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.consume_s

    @property
    def publish_per_s(self) -> float:
        return self.tasks / self.publish_s

    @property
    def commands_per_task(self) -> float:
        return sum(self.commands.values()) / self.tasks


@dataclass
class Bench:
    """What every measurement shares: the server, the probe, the options."""

    url: str
    probe: Probe
    tasks: int
    timeout: float
    logdir: Path
    measurements: list[Measurement] = field(default_factory=list)

    def env(self, config: Config) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MERLIN_TRACKING")}
        pythonpath = [str(HERE), str(REPO_ROOT), env.get("PYTHONPATH", "")]
        env.update(
            BENCH_REDIS_URL=self.url,
            BENCH_QUEUE=QUEUE,
            BENCH_TASKS=str(self.tasks),
            BENCH_TRACKING="1" if config.tracking else "0",
            PYTHONPATH=os.pathsep.join(p for p in pythonpath if p),
            PYTHONUNBUFFERED="1",
        )
        if not config.tracking:
            env["MERLIN_TRACKING"] = "0"
        return env


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def publish(bench: Bench, config: Config, workspace: str) -> tuple[float, str | None]:
    """Publish the tasks from a fresh process; returns (seconds, run id or None)."""
    command = [sys.executable, str(HERE / f"{APP_MODULE}.py"), "publish", STUDY, workspace]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=bench.env(config), capture_output=True, text=True,
        timeout=bench.timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"publishing failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return float(report["seconds"]), report["run_id"]


def worker_command(config: Config) -> list[str]:
    command = [
        sys.executable, "-m", "celery", "-A", APP_MODULE, "worker", "--pool", config.pool,
        "-n", f"bench-{config.pool}@%h", "-Q", QUEUE, "--without-mingle", "--without-gossip",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    if config.pool != "solo":
        command += ["--concurrency", str(config.concurrency)]
    return command


@contextmanager
def running_worker(bench: Bench, config: Config, tag: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``celery worker`` subprocess in its own process group, warm-shut-down at the end."""
    log = (bench.logdir / f"{tag}.log").open("wb")
    proc = subprocess.Popen(
        worker_command(config), cwd=REPO_ROOT, env=bench.env(config), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
        stop_worker(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"worker exited with {proc.returncode}; see {log.name}")
    finally:
        stop_worker(proc)
        log.close()


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # warm shutdown: the tracked worker flushes and marks itself STOPPED
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # strays: prefork children
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def exact_counters(tasks: int) -> dict[str, int]:
    return {"queued": tasks, "started": tasks, "succeeded": tasks, "failed": 0, "retried": 0,
            "revoked": 0}  # fmt: skip


def wait_for_ledger(bench: Bench, db: TrackingDatabase, run_id: str) -> tuple[float, int]:
    """Poll the run until COMPLETED with exact counters; returns (time.time(), polls)."""
    polls = 0
    expected = exact_counters(bench.tasks)

    def converged() -> Run | None:
        nonlocal polls
        polls += 1
        run = db.runs.get(run_id)
        done = run.status is RunStatus.COMPLETED and run.counters == expected
        return run if done else None

    try:
        wait_for(converged, bench.timeout, "the run to be COMPLETED with exact counters", 0.01)
    except TimeoutError:
        run = db.runs.get(run_id)
        raise RuntimeError(f"ledger did not converge: {run.status} {run.counters}") from None
    return time.time(), polls


def worker_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a worker and its pool children so far (nan without psutil)."""
    if psutil is None:
        return float("nan")
    try:
        main = psutil.Process(pid)
        processes = [main, *main.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def wait_for_tasks(bench: Bench, pid: int) -> tuple[CpuCost, float, float]:
    """Wait for every task; returns the CPU cost per task while they ran and the time.time()
    stamps of the first task's start and the last task's end."""
    probe = bench.probe
    seen = wait_for(lambda: probe.done() or None, bench.timeout, "the first task", 0.005)
    worker0, redis0 = worker_cpu_seconds(pid), probe.cpu_seconds()
    wait_for(lambda: probe.done() >= bench.tasks, bench.timeout, "all tasks", 0.02)
    worker1, redis1 = worker_cpu_seconds(pid), probe.cpu_seconds()
    first, last = probe.stamps()
    ran = max(1, bench.tasks - seen)
    cost = CpuCost((worker1 - worker0) * 1000 / ran, (redis1 - redis0) * 1000 / ran)
    return cost, first, last


def measure(bench: Bench, config: Config, repetition: int) -> Measurement:
    """One measurement on a freshly flushed server."""
    probe = bench.probe
    probe.reset()
    load = os.getloadavg()[0]
    tag = f"{config.pool}-{'on' if config.tracking else 'off'}-{repetition}"
    workspace = f"/bench/{tag}-{time.time_ns()}"
    db = TrackingDatabase.from_url(bench.url)
    publish_s, run_id = publish(bench, config, workspace)
    if config.tracking and run_id is None:
        raise RuntimeError("tracking on but launch_study returned no run")
    with running_worker(bench, config, tag) as proc:
        spawned = time.time()
        cpu, first, last = wait_for_tasks(bench, proc.pid)
        converge_s, ledger_polls = None, 0
        if run_id is not None:
            converged_at, ledger_polls = wait_for_ledger(bench, db, run_id)
            converge_s = max(0.0, converged_at - last)
    commands = without_probe_only(probe.command_calls())
    commands -= own_commands(bench, db, run_id, ledger_polls)
    check_ledger(db, config, run_id)
    return Measurement(
        config, repetition, bench.tasks, publish_s, first - spawned, last - first, converge_s,
        commands, cpu, load,
    )  # fmt: skip


def own_commands(
    bench: Bench, db: TrackingDatabase, run_id: str | None, ledger_polls: int
) -> Counter[str]:
    """Server commands the benchmark itself caused: probes, the tasks' counter, ledger polls."""
    own: Counter[str] = Counter(bench.probe.sent)
    own["incrby"] += bench.tasks  # each task counts itself (redis-py sends INCRBY)
    own["set"] += 2  # first and last stamps
    if run_id is not None and ledger_polls:
        for name, calls in one_ledger_poll(bench.probe, db, run_id).items():
            own[name] += calls * ledger_polls
    return own


def one_ledger_poll(probe: Probe, db: TrackingDatabase, run_id: str) -> Counter[str]:
    """Server commands of one ``db.runs.get`` (what the ledger polling sent each time)."""
    before = probe.command_calls()
    db.runs.get(run_id)
    return without_probe_only(probe.command_calls() - before)


def without_probe_only(calls: Counter[str]) -> Counter[str]:
    # Redis 7 names subcommands "config|resetstat"; the command is what precedes the "|".
    return Counter(
        {name: n for name, n in calls.items() if name.split("|")[0] not in PROBE_ONLY_COMMANDS}
    )


def check_ledger(db: TrackingDatabase, config: Config, run_id: str | None) -> None:
    """Tracking on: one run, one physical worker (STOPPED); off: nothing recorded at all."""
    runs = db.runs.get_all()
    workers = db.physical_workers.get_all()
    if not config.tracking:
        if runs or workers:
            raise RuntimeError(f"tracking off, yet {len(runs)} runs, {len(workers)} workers")
        return
    if [run.id for run in runs] != [run_id] or len(workers) != 1:
        raise RuntimeError(f"expected 1 run and 1 worker, got {len(runs)} and {len(workers)}")
    if workers[0].status.value != "STOPPED":
        raise RuntimeError(f"worker not recorded STOPPED after shutdown: {workers[0].status}")


# --------------------------------------------------------------------------- schedule
def schedule(pools: Sequence[str], concurrency: int, reps: int) -> list[tuple[Config, int]]:
    """Repetitions outermost; within one, each pool runs off/on or on/off, alternating."""
    plan = []
    for rep in range(reps):
        for index, pool in enumerate(pools):
            order = (False, True) if (rep + index) % 2 == 0 else (True, False)
            plan += [(Config(pool, tracking, concurrency), rep + 1) for tracking in order]
    return plan


def run_all(bench: Bench, plan: Sequence[tuple[Config, int]]) -> None:
    for number, (config, rep) in enumerate(plan, 1):
        m = measure(bench, config, rep)
        bench.measurements.append(m)
        converge = "" if m.converge_s is None else f", ledger +{m.converge_s * 1000:.0f} ms"
        print(
            f"[{number}/{len(plan)}] {config.label}, rep {rep}: {m.tasks_per_s:,.0f} tasks/s "
            f"(publish {m.publish_per_s:,.0f}/s, start-up {m.startup_s:.1f} s, "
            f"{m.commands_per_task:.1f} cmds/task{converge})",
            flush=True,
        )


# --------------------------------------------------------------------------- summary
@dataclass
class Summary:
    config: Config
    runs: list[Measurement]

    @property
    def median_tasks_per_s(self) -> float:
        return statistics.median(m.tasks_per_s for m in self.runs)

    @property
    def median_publish_per_s(self) -> float:
        return statistics.median(m.publish_per_s for m in self.runs)

    @property
    def commands_per_task(self) -> float:
        return statistics.median(m.commands_per_task for m in self.runs)

    @property
    def worker_cpu_us(self) -> float:
        return statistics.median(m.cpu.worker_ms for m in self.runs) * 1000

    @property
    def redis_cpu_us(self) -> float:
        return statistics.median(m.cpu.redis_ms for m in self.runs) * 1000

    @property
    def converge_ms(self) -> tuple[float, float] | None:
        lags = [m.converge_s for m in self.runs if m.converge_s is not None]
        if not lags:
            return None
        return statistics.median(lags) * 1000, max(lags) * 1000

    def command_mix(self, top: int = 8) -> str:
        total: Counter[str] = Counter()
        for m in self.runs:
            total.update(m.commands)
        scale = sum(m.tasks for m in self.runs)
        return ", ".join(f"{name} {calls / scale:.2f}" for name, calls in total.most_common(top))


def summarize(measurements: Sequence[Measurement]) -> list[Summary]:
    configs = list(dict.fromkeys(m.config for m in measurements))
    configs.sort(key=lambda c: (c.pool != "solo", c.pool, c.tracking))
    return [Summary(c, [m for m in measurements if m.config == c]) for c in configs]


def ratios(summaries: Sequence[Summary]) -> dict[str, float]:
    by_config = {s.config: s for s in summaries}
    out = {}
    for s in summaries:
        off = by_config.get(Config(s.config.pool, False, s.config.concurrency))
        if s.config.tracking and off is not None:
            out[s.config.pool] = s.median_tasks_per_s / off.median_tasks_per_s
    return out


def paired_ratios(measurements: Sequence[Measurement]) -> dict[str, float]:
    """Per pool, the median over repetitions of on/off within the repetition (run back to back)."""
    by_key = {(m.config.pool, m.repetition, m.config.tracking): m for m in measurements}
    pairs: dict[str, list[float]] = {}
    for (pool, rep, tracking), on in by_key.items():
        off = by_key.get((pool, rep, False))
        if tracking and off is not None:
            pairs.setdefault(pool, []).append(on.tasks_per_s / off.tasks_per_s)
    return {pool: statistics.median(values) for pool, values in pairs.items()}


# --------------------------------------------------------------------------- report
def machine_facts_with(probe: Probe) -> dict[str, str]:
    return {
        **machine_facts(),
        "Celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis-py": redis.__version__,
        "redis-server": probe.server_version(),
        "merlin_tracking": git_state(),
        "load average at start (1/5/15 min)": load_average(),
    }


def results_table(summaries: Sequence[Summary]) -> list[str]:
    ratio_of = ratios(summaries)
    paired = paired_ratios([m for s in summaries for m in s.runs])
    lines = [
        "| pool | tracking | runs | median tasks/s (min-max) | ratio on/off | "
        "paired ratio | Redis commands/task | worker CPU µs/task | redis-server CPU µs/task | "
        "publish tasks/s | ledger COMPLETED after last task (median / max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        rates = [m.tasks_per_s for m in s.runs]
        pool = s.config.pool if s.config.pool == "solo" else f"{s.config.pool} (-c 2)"
        ratio = f"{ratio_of[s.config.pool]:.3f}" if s.config.tracking else ""
        pair = paired.get(s.config.pool)
        pair_text = f"{pair:.3f}" if s.config.tracking and pair is not None else ""
        lag = s.converge_ms
        lag_text = "" if lag is None else f"{lag[0]:.0f} ms / {lag[1]:.0f} ms"
        lines.append(
            f"| {pool} | {'on' if s.config.tracking else 'off'} | {len(s.runs)} | "
            f"{s.median_tasks_per_s:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {ratio} | "
            f"{pair_text} | "
            f"{s.commands_per_task:.2f} | {s.worker_cpu_us:.0f} | {s.redis_cpu_us:.0f} | "
            f"{s.median_publish_per_s:,.0f} | {lag_text} |"
        )
    return lines


def runs_table(measurements: Sequence[Measurement]) -> list[str]:
    lines = [
        "| # | pool | tracking | rep | tasks/s | publish s | worker start-up s | "
        "ledger lag ms | commands/task | worker CPU µs/task | redis-server CPU µs/task | "
        "load avg (1 min) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for number, m in enumerate(measurements, 1):
        lag = "" if m.converge_s is None else f"{m.converge_s * 1000:.0f}"
        lines.append(
            f"| {number} | {m.config.pool} | {'on' if m.config.tracking else 'off'} | "
            f"{m.repetition} | {m.tasks_per_s:,.0f} | {m.publish_s:.2f} | {m.startup_s:.2f} | "
            f"{lag} | {m.commands_per_task:.2f} | {m.cpu.worker_ms * 1000:.0f} | "
            f"{m.cpu.redis_ms * 1000:.0f} | {m.load:.1f} |"
        )
    return lines


def verdict(summaries: Sequence[Summary]) -> str:
    ratio_of = ratios(summaries)
    parts = [f"{pool} {ratio:.3f}" for pool, ratio in ratio_of.items()]
    met = bool(ratio_of) and all(r >= TARGET_RATIO for r in ratio_of.values())
    word = "met" if met else "NOT met"
    return (
        f"**Target (ratio on/off >= {TARGET_RATIO} for every pool): {word}** ({', '.join(parts)})."
    )


HOW_TO_RUN = """\
```sh
python benchmarks/bench_throughput.py          # 5,000 tasks, 7 reps; updates this section
python benchmarks/bench_throughput.py --quick  # 1,000 tasks, 1 rep; prints, writes nothing
python benchmarks/bench_throughput.py --reps 3 --pools solo --output /tmp/t.md
python benchmarks/bench_throughput.py --notes findings.md  # replace the profiling notes below
python benchmarks/bench_throughput.py --help   # every option
```"""


def method_lines(tasks: int) -> list[str]:
    return [
        f"- {tasks:,} no-op tasks (`ignore_result=True`; each does one `INCR` so the benchmark "
        "knows when all are done, in both modes) through a real "
        f"`celery -A {APP_MODULE} worker` subprocess (`benchmarks/{APP_MODULE}.py`, an app "
        "without merlin_tracking code: tracking comes from the package's `celery.commands` entry "
        "point), `--without-mingle --without-gossip --loglevel WARNING`, default prefetch. The "
        'script starts its own `redis-server` on a free port of 127.0.0.1 (`--save "" '
        "--appendonly no`) as broker, result backend and tracking store, flushes it before each "
        "measurement and stops it at the end.",
        "- Each measurement publishes every task first, from a fresh process (tracking on: one "
        "`launch_study(app, study, workspace, group)` run; off: the same group's `apply_async()` "
        "with `tracking_enabled = False` and `MERLIN_TRACKING=0`), then starts the worker. "
        "**tasks/s** = tasks / (end of the last task - start of the first task), both stamped by "
        "the tasks, so worker start-up is left out. Tracking on then also waits until the run is "
        "COMPLETED with exact counters (queued = started = succeeded = tasks, nothing failed, "
        "retried or revoked; polled every 10 ms) and reports how long after the last task that "
        "was; a measurement whose run does not converge fails the benchmark. Then the worker gets "
        "SIGTERM (warm shutdown) and must record itself STOPPED; with tracking off nothing may be "
        "recorded at all.",
        "- Within each repetition the two modes of a pool run back to back, in alternating order "
        "(off/on, then on/off). **ratio on/off** = median tasks/s on / median tasks/s off (the "
        "target's measure); **paired ratio** = median over repetitions of on/off within the "
        "repetition, a check that is less sensitive to drift in the machine's other load.",
        "- **Redis commands/task**: `INFO commandstats` delta over the whole measurement "
        "(publishing, worker start-up, tasks, ledger convergence, shutdown; commands run inside "
        "Lua scripts included), less the benchmark's own commands (the tasks' `INCRBY` and two "
        "time stamps, polling, `INFO`), divided by the tasks.",
        "- **worker CPU µs/task**: user + system CPU time of the worker process and its pool "
        "children (psutil), **redis-server CPU µs/task**: `INFO cpu`, both from the first task "
        "seen to the last, divided by the tasks run in between. CPU time is less sensitive than "
        "wall time to other work on the machine; the last column of the per-measurement table "
        "gives the 1-minute load average at its start.",
    ]


def results_lines(bench: Bench) -> list[str]:
    summaries = summarize(bench.measurements)
    return [
        verdict(summaries),
        "",
        *results_table(summaries),
        "",
        "Server command mix per task (all runs of the configuration together):",
        "",
        "| pool | tracking | commands per task (top 8) |",
        "|---|---|---|",
        *(
            f"| {s.config.pool} | {'on' if s.config.tracking else 'off'} | {s.command_mix()} |"
            for s in summaries
        ),
        "",
        "Every measurement, in the order run:",
        "",
        *runs_table(bench.measurements),
    ]


def render(bench: Bench, facts: dict[str, str], wall_s: float, notes: Sequence[str]) -> str:
    facts = {**facts, "load average at end (1/5/15 min)": load_average()}
    facts["benchmark wall time"] = f"{wall_s:.0f} s"
    lines = [
        SECTION_START,
        "# merlin_tracking task throughput: tracking on vs off",
        "",
        "Generated by `benchmarks/bench_throughput.py` from a real run; the script replaces only "
        "the text between the `throughput` markers (and keeps the profiling notes).",
        "",
        "## How to run",
        "",
        HOW_TO_RUN,
        "",
        "## What is measured",
        "",
        *method_lines(bench.tasks),
        "",
        "## Machine",
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in facts.items()),
        "",
        "## Results",
        "",
        *results_lines(bench),
    ]
    if notes:
        lines += ["", NOTES_START, *notes, NOTES_END]
    lines.append(SECTION_END)
    return "\n".join(lines)


def between(text: str, start: str, end: str) -> str | None:
    """The text strictly between the markers ``start`` and ``end``, or None."""
    first = text.find(start)
    last = text.find(end, first + len(start)) if first != -1 else -1
    return text[first + len(start) : last] if last != -1 else None


def load_notes(notes_file: str | None, output: str | None) -> list[str]:
    """Notes from ``--notes``, else the ones already in the output file's section."""
    if notes_file:
        return Path(notes_file).read_text(encoding="utf-8").strip().splitlines()
    if output and Path(output).exists():
        kept = between(Path(output).read_text(encoding="utf-8"), NOTES_START, NOTES_END)
        if kept is not None:
            return kept.strip("\n").splitlines()
    return []


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per measurement")
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each configuration")
    parser.add_argument("--pools", default="solo,prefork", help="comma-separated pools")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool processes")
    parser.add_argument("--quick", action="store_true", help="1,000 tasks, 1 rep, write nothing")
    parser.add_argument("--output", help=f"markdown file to update (default {DEFAULT_OUTPUT})")
    parser.add_argument(
        "--notes",
        help="markdown file of profiling findings for the section (default: keep the "
        "ones already there)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per wait, seconds")
    parser.add_argument(
        "--redis-server", default=shutil.which("redis-server"), help="redis-server binary"
    )
    args = parser.parse_args(argv)
    if not args.redis_server:
        parser.error("redis-server not found on PATH; install it or pass --redis-server")
    if args.quick:
        args.tasks, args.reps = 1000, 1
    elif args.output is None:
        args.output = str(DEFAULT_OUTPUT)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    pools = [p.strip() for p in args.pools.split(",") if p.strip()]
    with private_redis(args.redis_server) as url, tempfile.TemporaryDirectory() as logdir:
        probe = Probe(url)
        facts = machine_facts_with(probe)
        bench = Bench(url, probe, args.tasks, args.timeout, Path(logdir))
        try:
            run_all(bench, schedule(pools, args.concurrency, args.reps))
        except Exception:
            for log in sorted(Path(logdir).glob("*.log")):
                print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
            raise
    notes = load_notes(args.notes, args.output)
    section = render(bench, facts, time.monotonic() - started, notes)
    print("\n" + section)
    if args.output:
        merge_section(Path(args.output), section, SECTION_START, SECTION_END, first=False)
        print(f"\nupdated the throughput section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
