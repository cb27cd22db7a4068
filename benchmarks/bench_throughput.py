#!/usr/bin/env python3
"""Throughput of no-op tasks through a real ``celery worker``: tracking on, resolver, off.

For each pool (solo, and prefork with ``--concurrency 2``) and each mode the script publishes
``--tasks`` no-op tasks as one group from a fresh process, then starts ``celery -A
throughput_app worker`` as a subprocess and waits until every task is done. The modes:

- ``on``: the publisher opens one run through ``launch_study`` (every message carries the run
  headers and is counted at publish); the worker is tracked through the package's
  ``celery.commands`` entry point.
- ``resolver``: the publisher is untracked (plain ``apply_async`` with ``tracking_enabled =
  False`` and ``MERLIN_TRACKING=0``); the worker is tracked with
  ``MERLIN_TRACKING_RUN_RESOLVER=workflow``, so it resolves each message's run when it receives
  it, creates the run (workspace ``celery://throughput_app/<group id>``) and counts the task as
  queued there.
- ``off``: publisher and worker both untracked.

Throughput is tasks / (end of the last task - start of the first task), stamped by the tasks
themselves, so worker start-up is left out; the tracked modes also wait until the run is
COMPLETED with exact counters and report how long after the last task that happened. Within
each repetition the modes run back to back, ``off`` in the middle, in an order that reverses
from one repetition to the next, to cancel drift.

Everything runs against a private ``redis-server`` on a free port of 127.0.0.1 (broker, result
backend and tracking store), flushed before each measurement and stopped at the end. Redis
commands per task come from ``INFO commandstats`` deltas (commands run by Lua scripts
included), less the benchmark's own commands (the tasks' counter, polling).

    python benchmarks/bench_throughput.py            # 5,000 tasks x 7 reps; updates docs/benchmarks.md
    python benchmarks/bench_throughput.py --quick    # 1,000 tasks x 1 rep; prints, writes nothing
    python benchmarks/bench_throughput.py --modes on,off  # only some of the modes
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

from merlin_tracking import Run, RunNotFoundError, RunStatus, TrackingDatabase  # noqa: E402

APP_MODULE = "throughput_app"
APP_MAIN = "throughput_app"  # the app's main name, which the workflow resolver puts in workspaces
TASK_NAME = "bench.noop"  # the workflow resolver's study: the name of the group's header task
QUEUE = "bench"
STUDY = "throughput_bench"
TARGET_RATIO = 0.95  # the speed issue (round two); round one asked 0.9
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

# Modes: who tracks (see the module docstring).
ON, OFF, RESOLVER = "on", "off", "resolver"
# Order within a repetition (reversed every other one): off in the middle, next to each
# tracked mode, so that every paired ratio compares neighbours.
SCHEDULE_ORDER = (ON, OFF, RESOLVER)
DISPLAY_ORDER = (OFF, ON, RESOLVER)
RESOLVER_NAME = "workflow"

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
    mode: str  # ON, OFF or RESOLVER
    concurrency: int

    @property
    def label(self) -> str:
        pool = self.pool if self.pool == "solo" else f"{self.pool} -c {self.concurrency}"
        return f"{pool}, {self.mode_label}"

    @property
    def mode_label(self) -> str:
        return {ON: "tracking on", OFF: "tracking off", RESOLVER: "resolver"}[self.mode]

    @property
    def publisher_tracked(self) -> bool:
        return self.mode == ON

    @property
    def worker_tracked(self) -> bool:
        return self.mode != OFF


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

    def env(self, tracked: bool, resolver: str | None = None) -> dict[str, str]:
        """Environment of a publisher or worker subprocess, tracked or not."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MERLIN_TRACKING")}
        pythonpath = [str(HERE), str(REPO_ROOT), env.get("PYTHONPATH", "")]
        env.update(
            BENCH_REDIS_URL=self.url,
            BENCH_QUEUE=QUEUE,
            BENCH_TASKS=str(self.tasks),
            BENCH_TRACKING="1" if tracked else "0",
            PYTHONPATH=os.pathsep.join(p for p in pythonpath if p),
            PYTHONUNBUFFERED="1",
        )
        if not tracked:
            env["MERLIN_TRACKING"] = "0"
        if resolver is not None:
            env["MERLIN_TRACKING_RUN_RESOLVER"] = resolver
        return env

    def publisher_env(self, config: Config) -> dict[str, str]:
        return self.env(config.publisher_tracked)

    def worker_env(self, config: Config) -> dict[str, str]:
        resolver = RESOLVER_NAME if config.mode == RESOLVER else None
        return self.env(config.worker_tracked, resolver)


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class Published:
    seconds: float
    run_id: str | None  # tracking on: the run launch_study opened
    group_id: str | None  # untracked publisher: the group's id


def publish(bench: Bench, config: Config, workspace: str) -> Published:
    """Publish the tasks from a fresh process."""
    command = [sys.executable, str(HERE / f"{APP_MODULE}.py"), "publish", STUDY, workspace]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=bench.publisher_env(config), capture_output=True,
        text=True, timeout=bench.timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"publishing failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Published(float(report["seconds"]), report["run_id"], report["group_id"])


def ledger_key(config: Config, published: Published) -> str | None:
    """What identifies the run to wait for: launch_study's run id, or (resolver) the
    workspace the workflow resolver gives the group; None when nothing is tracked."""
    if config.mode == ON:
        if published.run_id is None:
            raise RuntimeError("tracking on but launch_study returned no run")
        return published.run_id
    if config.mode == RESOLVER:
        if published.group_id is None:
            raise RuntimeError("the untracked publisher returned no group id")
        return resolver_workspace(published.group_id)
    return None


def resolver_workspace(group_id: str) -> str:
    return f"celery://{APP_MAIN}/{group_id}"


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
        worker_command(config), cwd=REPO_ROOT, env=bench.worker_env(config), stdout=log,
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
            "revoked": 0, "lost": 0}  # fmt: skip


def wait_for_ledger(bench: Bench, db: TrackingDatabase, key: str) -> tuple[float, int]:
    """Poll the run (by id or workspace) until COMPLETED with exact counters; returns
    (time.time(), polls)."""
    polls = 0
    expected = exact_counters(bench.tasks)

    def converged() -> Run | None:
        nonlocal polls
        polls += 1
        try:
            run = db.runs.get(key)
        except RunNotFoundError:  # resolver: the worker has not created it yet
            return None
        done = run.status is RunStatus.COMPLETED and run.counters == expected
        return run if done else None

    try:
        wait_for(converged, bench.timeout, "the run to be COMPLETED with exact counters", 0.01)
    except TimeoutError:
        try:
            run = db.runs.get(key)
        except RunNotFoundError:
            raise RuntimeError(f"no run {key} in the ledger") from None
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
    """Wait for every task; returns the CPU cost per task in the steady state (from the
    tenth of the tasks on: the worker's and its beacon's start-up are not a per-task cost)
    and the time.time() stamps of the first task's start and the last task's end."""
    probe = bench.probe
    warm = max(1, bench.tasks // 10)
    seen = wait_for(
        lambda: probe.done() if probe.done() >= warm else None, bench.timeout, "warm-up", 0.005
    )
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
    tag = f"{config.pool}-{config.mode}-{repetition}"
    workspace = f"/bench/{tag}-{time.time_ns()}"
    db = TrackingDatabase.from_url(bench.url)
    published = publish(bench, config, workspace)
    key = ledger_key(config, published)
    with running_worker(bench, config, tag) as proc:
        spawned = time.time()
        cpu, first, last = wait_for_tasks(bench, proc.pid)
        converge_s, ledger_polls = None, 0
        if key is not None:
            converged_at, ledger_polls = wait_for_ledger(bench, db, key)
            converge_s = max(0.0, converged_at - last)
    commands = without_probe_only(probe.command_calls())
    commands -= own_commands(bench, db, key, ledger_polls)
    check_ledger(db, config, key)
    return Measurement(
        config, repetition, bench.tasks, published.seconds, first - spawned, last - first,
        converge_s, commands, cpu, load,
    )  # fmt: skip


def own_commands(
    bench: Bench, db: TrackingDatabase, key: str | None, ledger_polls: int
) -> Counter[str]:
    """Server commands the benchmark itself caused: probes, the tasks' counter, ledger polls."""
    own: Counter[str] = Counter(bench.probe.sent)
    own["incrby"] += bench.tasks  # each task counts itself (redis-py sends INCRBY)
    own["set"] += 2  # first and last stamps
    if key is not None and ledger_polls:
        for name, calls in one_ledger_poll(bench.probe, db, key).items():
            own[name] += calls * ledger_polls
    return own


def one_ledger_poll(probe: Probe, db: TrackingDatabase, key: str) -> Counter[str]:
    """Server commands of one ``db.runs.get`` by id or workspace (what the ledger polling sent
    each time; the run exists by then, so a poll that found none is counted like one that did)."""
    before = probe.command_calls()
    db.runs.get(key)
    return without_probe_only(probe.command_calls() - before)


def without_probe_only(calls: Counter[str]) -> Counter[str]:
    # Redis 7 names subcommands "config|resetstat"; the command is what precedes the "|".
    return Counter(
        {name: n for name, n in calls.items() if name.split("|")[0] not in PROBE_ONLY_COMMANDS}
    )


def check_ledger(db: TrackingDatabase, config: Config, key: str | None) -> None:
    """Tracked worker: one run (launch_study's, or the resolver's for the whole group, with the
    header task's name as study and the queue it came from), one physical worker (STOPPED);
    off: nothing recorded at all."""
    runs = db.runs.get_all()
    workers = db.physical_workers.get_all()
    if not config.worker_tracked:
        if runs or workers:
            raise RuntimeError(f"tracking off, yet {len(runs)} runs, {len(workers)} workers")
        return
    if len(runs) != 1 or key not in (runs[0].id, runs[0].workspace) or len(workers) != 1:
        found = ", ".join(f"{run.id} {run.workspace}" for run in runs)
        raise RuntimeError(f"expected run {key} and 1 worker, got [{found}], {len(workers)}")
    if config.mode == RESOLVER:
        check_resolved_run(db, runs[0])
    if workers[0].status.value != "STOPPED":
        raise RuntimeError(f"worker not recorded STOPPED after shutdown: {workers[0].status}")


def check_resolved_run(db: TrackingDatabase, run: Run) -> None:
    """The workflow resolver's run: study = the group's task name, queue = where tasks came."""
    study = db.studies.get(run.study_id).name if run.study_id else None
    if study != TASK_NAME or run.queues != (QUEUE,):
        raise RuntimeError(f"resolver run: study {study!r}, queues {run.queues}")


# --------------------------------------------------------------------------- schedule
def schedule(
    pools: Sequence[str], modes: Sequence[str], concurrency: int, reps: int
) -> list[tuple[Config, int]]:
    """Repetitions outermost; within one, each pool runs its modes back to back, off in the
    middle (resolver/off/on, then on/off/resolver, alternating; with two modes off/on, on/off)."""
    forward = [mode for mode in SCHEDULE_ORDER if mode in modes]
    plan = []
    for rep in range(reps):
        for index, pool in enumerate(pools):
            order = forward[::-1] if (rep + index) % 2 == 0 else forward
            plan += [(Config(pool, mode, concurrency), rep + 1) for mode in order]
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
    configs.sort(key=lambda c: (c.pool != "solo", c.pool, DISPLAY_ORDER.index(c.mode)))
    return [Summary(c, [m for m in measurements if m.config == c]) for c in configs]


# Ratios are keyed by (pool, tracked mode) and taken against the same pool's tracking off.
RatioKey = tuple[str, str]


def ratios(summaries: Sequence[Summary]) -> dict[RatioKey, float]:
    by_config = {s.config: s for s in summaries}
    out = {}
    for s in summaries:
        off = by_config.get(Config(s.config.pool, OFF, s.config.concurrency))
        if s.config.mode != OFF and off is not None:
            out[s.config.pool, s.config.mode] = s.median_tasks_per_s / off.median_tasks_per_s
    return out


def paired_ratios(measurements: Sequence[Measurement]) -> dict[RatioKey, float]:
    """Per pool and tracked mode, the median over repetitions of tracked/off within the
    repetition (run back to back)."""
    by_key = {(m.config.pool, m.repetition, m.config.mode): m for m in measurements}
    pairs: dict[RatioKey, list[float]] = {}
    for (pool, rep, mode), tracked in by_key.items():
        off = by_key.get((pool, rep, OFF))
        if mode != OFF and off is not None:
            pairs.setdefault((pool, mode), []).append(tracked.tasks_per_s / off.tasks_per_s)
    return {key: statistics.median(values) for key, values in pairs.items()}


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
        "| pool | mode | runs | median tasks/s (min-max) | ratio to off | "
        "paired ratio | Redis commands/task | worker CPU µs/task | redis-server CPU µs/task | "
        "publish tasks/s | ledger COMPLETED after last task (median / max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        rates = [m.tasks_per_s for m in s.runs]
        pool = s.config.pool if s.config.pool == "solo" else f"{s.config.pool} (-c 2)"
        key = (s.config.pool, s.config.mode)
        ratio, pair = ratio_of.get(key), paired.get(key)
        ratio_text = "" if ratio is None else f"{ratio:.3f}"
        pair_text = "" if pair is None else f"{pair:.3f}"
        lag = s.converge_ms
        lag_text = "" if lag is None else f"{lag[0]:.0f} ms / {lag[1]:.0f} ms"
        lines.append(
            f"| {pool} | {s.config.mode} | {len(s.runs)} | "
            f"{s.median_tasks_per_s:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {ratio_text} | "
            f"{pair_text} | "
            f"{s.commands_per_task:.2f} | {s.worker_cpu_us:.0f} | {s.redis_cpu_us:.0f} | "
            f"{s.median_publish_per_s:,.0f} | {lag_text} |"
        )
    return lines


def runs_table(measurements: Sequence[Measurement]) -> list[str]:
    lines = [
        "| # | pool | mode | rep | tasks/s | publish s | worker start-up s | "
        "ledger lag ms | commands/task | worker CPU µs/task | redis-server CPU µs/task | "
        "load avg (1 min) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for number, m in enumerate(measurements, 1):
        lag = "" if m.converge_s is None else f"{m.converge_s * 1000:.0f}"
        lines.append(
            f"| {number} | {m.config.pool} | {m.config.mode} | "
            f"{m.repetition} | {m.tasks_per_s:,.0f} | {m.publish_s:.2f} | {m.startup_s:.2f} | "
            f"{lag} | {m.commands_per_task:.2f} | {m.cpu.worker_ms * 1000:.0f} | "
            f"{m.cpu.redis_ms * 1000:.0f} | {m.load:.1f} |"
        )
    return lines


def verdict(summaries: Sequence[Summary]) -> str:
    """One line per tracked mode: is its ratio to off at least the target for every pool?"""
    ratio_of = ratios(summaries)
    parts = []
    for mode in (ON, RESOLVER):
        values = {pool: r for (pool, m), r in ratio_of.items() if m == mode}
        if values:
            word = "met" if all(r >= TARGET_RATIO for r in values.values()) else "NOT met"
            pools = ", ".join(f"{pool} {r:.3f}" for pool, r in values.items())
            parts.append(f"{mode}/off {word} ({pools})")
    if not parts:
        return "No target verdict: the ratios need tracking off and a tracked mode."
    return f"**Target (ratio to off >= {TARGET_RATIO} for every pool): {'; '.join(parts)}.**"


HOW_TO_RUN = """\
```sh
python benchmarks/bench_throughput.py          # 5,000 tasks, 7 reps; updates this section
python benchmarks/bench_throughput.py --quick  # 1,000 tasks, 1 rep; prints, writes nothing
python benchmarks/bench_throughput.py --reps 3 --pools solo --output /tmp/t.md
python benchmarks/bench_throughput.py --modes off,resolver  # default: on,off,resolver
python benchmarks/bench_throughput.py --notes findings.md  # replace the profiling notes below
python benchmarks/bench_throughput.py --help   # every option
```"""


def method_lines(tasks: int) -> list[str]:
    return [
        f"- {tasks:,} no-op tasks (`ignore_result=True`; each does one `INCR` so the benchmark "
        "knows when all are done, in every mode) through a real "
        f"`celery -A {APP_MODULE} worker` subprocess (`benchmarks/{APP_MODULE}.py`, an app "
        "without merlin_tracking code: tracking comes from the package's `celery.commands` entry "
        "point), `--without-mingle --without-gossip --loglevel WARNING`, default prefetch. The "
        'script starts its own `redis-server` on a free port of 127.0.0.1 (`--save "" '
        "--appendonly no`) as broker, result backend and tracking store, flushes it before each "
        "measurement and stops it at the end.",
        "- Each measurement publishes every task first, as one group from a fresh process, then "
        "starts the worker. Modes: **on**: the publisher opens one run with "
        "`launch_study(app, study, workspace, group)` (run headers on every message, tasks "
        "counted at publish) and the worker is tracked; **resolver**: the publisher is untracked "
        "(the group's plain `apply_async()` with `tracking_enabled = False` and "
        "`MERLIN_TRACKING=0`) and the worker is tracked with "
        f"`MERLIN_TRACKING_RUN_RESOLVER={RESOLVER_NAME}`: its main process resolves each "
        "message without run headers when it receives it, creates the group's run "
        f"(`celery://{APP_MAIN}/<group id>`, study `{TASK_NAME}`) once and counts the task as "
        "queued there; **off**: publisher and worker both untracked.",
        "- **tasks/s** = tasks / (end of the last task - start of the first task), both stamped "
        "by the tasks, so worker start-up is left out. The tracked modes then also wait until "
        "the run (found by id, or by the resolver's workspace) is COMPLETED with exact counters "
        "(queued = started = succeeded = tasks, nothing failed, retried or revoked; polled every "
        "10 ms) and report how long after the last task that was; a measurement whose run does "
        "not converge, or whose ledger holds any other run, fails the benchmark. Then the worker "
        "gets SIGTERM (warm shutdown) and must record itself STOPPED; with tracking off nothing "
        "may be recorded at all.",
        "- Within each repetition the modes of a pool run back to back with off in the middle, "
        "in an order that reverses from one repetition to the next (resolver/off/on, then "
        "on/off/resolver). **ratio to off** = median tasks/s of the mode / median tasks/s off "
        "(the target's measure); **paired ratio** = median over repetitions of mode/off within "
        "the repetition (neighbouring measurements), a check that is less sensitive to drift in "
        "the machine's other load.",
        "- **Redis commands/task**: `INFO commandstats` delta over the whole measurement "
        "(publishing, worker start-up, tasks, ledger convergence, shutdown; commands run inside "
        "Lua scripts included), less the benchmark's own commands (the tasks' `INCRBY` and two "
        "time stamps, polling, `INFO`), divided by the tasks.",
        "- **worker CPU µs/task**: user + system CPU time of the worker process and its pool "
        "children and beacon (psutil), **redis-server CPU µs/task**: `INFO cpu`, both in the "
        "steady state: from the moment a tenth of the tasks are done to the last, divided by "
        "the tasks run in between (so the worker's start-up, which includes its beacon's, is "
        "not counted as a per-task cost). CPU time is less sensitive than "
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
        "| pool | mode | commands per task (top 8) |",
        "|---|---|---|",
        *(f"| {s.config.pool} | {s.config.mode} | {s.command_mix()} |" for s in summaries),
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
        "# merlin_tracking task throughput: tracking on, resolver, off",
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
    parser.add_argument(
        "--modes",
        default=",".join(SCHEDULE_ORDER),
        help="comma-separated modes: on (launch_study), resolver (untracked publisher, "
        f"worker with the {RESOLVER_NAME} resolver), off; ratios need off",
    )
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
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(args.modes) - set(SCHEDULE_ORDER))
    if unknown or not args.modes:
        parser.error(f"--modes: unknown {unknown}; choose from {', '.join(SCHEDULE_ORDER)}")
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
            run_all(bench, schedule(pools, args.modes, args.concurrency, args.reps))
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
