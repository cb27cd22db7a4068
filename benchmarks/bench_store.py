#!/usr/bin/env python3
"""Benchmark of merlin_tracking's Redis store through the public ``TrackingDatabase`` API.

The script starts its own ``redis-server`` on a free local port (no persistence), so it never
touches another server's data, and stops it at the end. For each population size it creates
logical workers, then runs spread over studies and queues, and measures create, get (by id and
by workspace), get_all (unfiltered, each filter, one combined filter), delete and delete_all:
wall time, client round trips, client commands and server commands (``INFO commandstats``,
which also counts the commands that Lua scripts run). It also measures Redis memory per run
record at 5,000 runs and breaks it down by key type.

    python benchmarks/bench_store.py                 # 1k, 10k, 100k; updates docs/benchmarks.md
    python benchmarks/bench_store.py --quick         # 1k only, prints, writes nothing
    python benchmarks/bench_store.py --sizes 1000,10000 --output /tmp/bench.md

The report goes between the ``store`` markers of the output file; the rest of the file (such as
the throughput section of ``bench_throughput.py``) is kept.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis

# Run from a checkout without installing: the package sits next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_support import (  # a sibling module: run these scripts as files
    git_state,
    load_average,
    machine_facts,
    merge_section,
    private_redis,
)

from merlin_tracking import TrackingDatabase
from merlin_tracking.stores.redis import connection as store_connection
from merlin_tracking.stores.redis import scripts as store_scripts

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SIZES = (1_000, 10_000, 100_000)
PREFIX = "bench"
N_STUDIES = 20
N_QUEUES = 50
N_WORKERS = 50
SEED = 20240611
STATUS_WEIGHTS = {
    "COMPLETED": 55,
    "RUNNING": 10,
    "QUEUED": 10,
    "FAILED": 10,
    "INITIALIZED": 10,
    "CANCELLED": 5,
}
FILTER_STATUS = "FAILED"
MEMORY_TARGET = 600
DIAGNOSTIC_LISTPACK_VALUE = 128
SECTION_START = "<!-- store:start -->"
SECTION_END = "<!-- store:end -->"
TIMING_NOTE = (
    "Wall times vary from run to run on a shared 2-core machine (see the load average"
    "s): compare them within one run. Round trips, command counts and memory are deterministic "
    "for a given seed and code."
)
STUDY_NAMES = (
    "hello_samples", "feature_demo", "openfoam_wf", "lulesh_sweep", "null_spec",
    "optimization_basic", "chemistry_surrogate", "hpc_demo", "iterative_demo", "restart_delay",
    "remote_feature_demo", "simple_chain", "slurm_test", "flux_par", "lsf_par",
    "cantilever_uq", "jag_ensemble", "icf_design", "kinetics_fit", "ml_surrogate",
)  # fmt: skip
WORKSPACE_ROOT = "/p/lustre/user/studies"
WORKSPACE_EPOCH = datetime(2024, 1, 8, 9, 0, 0)


# --------------------------------------------------------------------------- instrumentation
@dataclass
class Counters:
    """Client-side traffic: one round trip per packet of commands sent (a pipeline is one)."""

    round_trips: int = 0
    commands: int = 0

    def snapshot(self) -> tuple[int, int]:
        return self.round_trips, self.commands


COUNTERS = Counters()


class CountingConnection(redis.connection.Connection):
    """A redis-py connection that counts round trips and the commands they carry."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        COUNTERS.round_trips += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        COUNTERS.commands += 1
        super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    def pack_commands(self, commands: Any) -> Any:
        commands = list(commands)
        COUNTERS.commands += len(commands)
        return super().pack_commands(commands)  # type: ignore[no-untyped-call]


def instrumented_client(url: str) -> redis.Redis:
    """A client like the store's own, over counting connections and without health PINGs."""
    pool = redis.ConnectionPool.from_url(
        url,
        connection_class=CountingConnection,
        socket_timeout=store_connection.SOCKET_TIMEOUT,
        socket_connect_timeout=store_connection.CONNECT_TIMEOUT,
        health_check_interval=0,
    )
    return redis.Redis(connection_pool=pool)


def install_client(url: str, client: redis.Redis) -> None:
    """Benchmark-only hook: make the store's ``client_for(url)`` return ``client``."""
    store_connection._clients[(url, os.getpid(), None)] = client


class Probe:
    """An uncounted side client on the private server: stats, memory, flushing."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        if self.client.connection_pool.connection_kwargs.get("port") == 6379:
            raise RuntimeError("refusing to benchmark against port 6379")

    def command_calls(self) -> Counter[str]:
        stats = self.client.info("commandstats")
        calls: Counter[str] = Counter()
        for name, values in stats.items():
            command = name.removeprefix("cmdstat_")
            if command != "info":  # the probe's own snapshots
                calls[command] = int(values["calls"])
        return calls

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def flush(self) -> None:
        self.client.flushall()

    def load_scripts(self) -> None:
        """Put the store's scripts in the server cache, as in any long-running deployment."""
        for source in store_scripts.SOURCES.values():
            self.client.script_load(source)

    def server_version(self) -> str:
        return str(self.client.info("server")["redis_version"])


# --------------------------------------------------------------------------- measurements
@dataclass
class Measurement:
    size: int
    operation: str
    times_ms: list[float]
    round_trips: list[int]
    client_commands: int
    server_commands: Counter[str]
    server_cpu_s: float
    results: int | None = None

    @property
    def calls(self) -> int:
        return len(self.times_ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.times_ms)

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    @property
    def rt_mean(self) -> float:
        return statistics.fmean(self.round_trips)

    @property
    def rt_max(self) -> int:
        return max(self.round_trips)

    @property
    def client_per_call(self) -> float:
        return self.client_commands / self.calls

    @property
    def server_per_call(self) -> float:
        return sum(self.server_commands.values()) / self.calls

    @property
    def server_cpu_ms(self) -> float:
        return self.server_cpu_s * 1000 / self.calls


def measure(
    probe: Probe, size: int, operation: str, calls: int, action: Callable[[int], int | None]
) -> Measurement:
    """Time ``action(i)`` for i in range(calls), with traffic counted around the whole block."""
    stats_before = probe.command_calls()
    cpu_before = probe.cpu_seconds()
    _, commands_before = COUNTERS.snapshot()
    times: list[float] = []
    trips: list[int] = []
    result: int | None = None
    for index in range(calls):
        trips_before = COUNTERS.round_trips
        start = time.perf_counter()
        result = action(index)
        times.append((time.perf_counter() - start) * 1000)
        trips.append(COUNTERS.round_trips - trips_before)
    cpu = probe.cpu_seconds() - cpu_before
    server = probe.command_calls() - stats_before
    client_commands = COUNTERS.commands - commands_before
    return Measurement(size, operation, times, trips, client_commands, server, cpu, result)


def repetitions(action: Callable[[], Any], budget_s: float, low: int, high: int) -> int:
    """Run ``action`` once (warm-up) and return how many timed calls fit in ``budget_s``."""
    start = time.perf_counter()
    action()
    elapsed = max(time.perf_counter() - start, 1e-6)
    return max(low, min(high, int(budget_s / elapsed)))


# --------------------------------------------------------------------------- the data set
@dataclass(frozen=True)
class RunSpec:
    study: str
    workspace: str
    queues: tuple[str, ...]
    status: str


@dataclass
class Plan:
    """Studies, queues, logical workers and a deterministic stream of runs."""

    seed: int
    queues: list[str] = field(default_factory=list)
    workers: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.queues = [f"merlin_q{i:02d}" for i in range(N_QUEUES)]
        self.workers = [
            (f"sim_worker_{i:02d}", tuple(rng.sample(self.queues, rng.randint(1, 2))))
            for i in range(N_WORKERS)
        ]

    def runs(self, count: int) -> Iterator[RunSpec]:
        rng = random.Random(self.seed + 1)
        statuses, weights = list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values())
        for i in range(count):
            study = STUDY_NAMES[rng.randrange(N_STUDIES)]
            stamp = (WORKSPACE_EPOCH + timedelta(seconds=37 * i)).strftime("%Y%m%d-%H%M%S")
            queues = tuple(rng.sample(self.queues, rng.randint(1, 3)))
            status = rng.choices(statuses, weights)[0]
            yield RunSpec(study, f"{WORKSPACE_ROOT}/{study}_{stamp}_{i}", queues, status)


def create_workers(db: TrackingDatabase, plan: Plan) -> list[str]:
    return [db.logical_workers.create(name, queues).id for name, queues in plan.workers]


def create_run(db: TrackingDatabase, spec: RunSpec) -> str:
    return db.runs.create(spec.study, spec.workspace, spec.queues, status=spec.status).id


# --------------------------------------------------------------------------- one population size
@dataclass
class SizeReport:
    size: int
    measurements: list[Measurement]
    populate_s: float
    create_rate: float


def populate(
    db: TrackingDatabase, probe: Probe, size: int, specs: list[RunSpec], sample: int
) -> tuple[list[str], Measurement, float]:
    """Create every run through the API; the last ``sample`` creates are timed one by one."""
    ids: list[str] = []
    start = time.perf_counter()
    untimed = len(specs) - sample
    for index, spec in enumerate(specs[:untimed]):
        ids.append(create_run(db, spec))
        if index and index % 20_000 == 0:
            print(f"    {index:,} runs created ({time.perf_counter() - start:.0f} s)", flush=True)

    def timed(index: int) -> int:
        ids.append(create_run(db, specs[untimed + index]))
        return 1

    created = measure(probe, size, "create", sample, timed)
    return ids, created, time.perf_counter() - start


def bench_reads(
    db: TrackingDatabase,
    probe: Probe,
    size: int,
    ids: list[str],
    specs: list[RunSpec],
    filters: dict[str, dict[str, Any]],
    rng: random.Random,
) -> list[Measurement]:
    results: list[Measurement] = []
    picks = [rng.randrange(len(ids)) for _ in range(300)]
    results.append(measure(probe, size, "get by id", 300, lambda i: _got(db, ids[picks[i]])))
    results.append(
        measure(probe, size, "get by workspace", 300, lambda i: _got(db, specs[picks[i]].workspace))
    )
    for label, criteria in filters.items():

        def query(_: int, criteria: dict[str, Any] = criteria) -> int:
            return len(db.runs.get_all(criteria or None))

        calls = repetitions(lambda: query(0), budget_s=2.0, low=3, high=20)
        results.append(measure(probe, size, label, calls, query))
    return results


def _got(db: TrackingDatabase, key: str) -> int:
    db.runs.get(key)
    return 1


def bench_deletes(
    db: TrackingDatabase, probe: Probe, size: int, ids: list[str], rng: random.Random
) -> list[Measurement]:
    victims = rng.sample(ids, min(100, len(ids) // 10))

    def delete_one(index: int) -> int:
        db.runs.delete(victims[index])
        return 1

    single = measure(probe, size, "delete (one run)", len(victims), delete_one)
    everything = measure(probe, size, "delete_all", 1, lambda _: db.runs.delete_all())
    return [single, everything]


def run_filters(db: TrackingDatabase, plan: Plan, worker_ids: list[str]) -> dict[str, Any]:
    study_id = db.studies.get(STUDY_NAMES[0]).id
    return {
        "get_all (no filter)": {},
        "get_all study_id": {"study_id": study_id},
        f"get_all status={FILTER_STATUS}": {"status": FILTER_STATUS},
        "get_all queues (1 queue)": {"queues": [plan.queues[0]]},
        "get_all workers (1 worker)": {"workers": [worker_ids[0]]},
        f"get_all study_id+status={FILTER_STATUS}": {"study_id": study_id, "status": FILTER_STATUS},
    }


def bench_size(
    db: TrackingDatabase, probe: Probe, plan: Plan, size: int, sample: int
) -> SizeReport:
    print(f"== {size:,} runs", flush=True)
    probe.flush()
    worker_ids = create_workers(db, plan)
    specs = list(plan.runs(size))
    ids, created, populate_s = populate(db, probe, size, specs, min(sample, size))
    print(f"    populated in {populate_s:.1f} s", flush=True)
    rng = random.Random(plan.seed + size)
    filters = run_filters(db, plan, worker_ids)
    measurements = [created, *bench_reads(db, probe, size, ids, specs, filters, rng)]
    measurements += bench_deletes(db, probe, size, ids, rng)
    for item in measurements:
        print(
            f"    {item.operation:<34} {item.mean_ms:10.3f} ms  rt {item.rt_mean:.2f}", flush=True
        )
    return SizeReport(size, measurements, populate_s, size / populate_s)


# --------------------------------------------------------------------------- memory
KEY_GROUPS: tuple[tuple[str, str], ...] = (
    ("run hash (run:<n>)", r"run:[0-9]+"),
    ("run:status:<S> sets", r"run:status:.+"),
    ("run:queue:<q> sets", r"run:queue:.+"),
    ("run:workspace index hash", r"run:workspace"),
    ("run:recent list", r"run:recent"),
    ("study:<id>:runs sets", r"study:[0-9a-z]{12}:runs"),
    ("lw:<id>:runs sets", r"lw:[0-9a-z]{12}:runs"),
)
OTHER_KEYS = "other (studies, workers)"


@dataclass
class MemoryGroup:
    name: str
    keys: int = 0
    bytes: int = 0
    members: int = 0
    encodings: Counter[str] = field(default_factory=Counter)
    encoding_bytes: Counter[str] = field(default_factory=Counter)

    def encoding_text(self) -> str:
        if len(self.encodings) == 1:
            return next(iter(self.encodings))
        return ", ".join(
            f"{name} {count:,} (~{self.encoding_bytes[name] / count:.0f} B each)"
            for name, count in self.encodings.most_common()
        )


@dataclass
class HashSample:
    """Sampled run hashes: mean payload and field count, and which values are long."""

    sampled: int
    payload: float
    fields: float
    long_values: Counter[str]


@dataclass
class MemoryReport:
    runs: int
    delta_bytes: int
    groups: list[MemoryGroup]
    hashes: HashSample
    listpack_value: int

    @property
    def per_run(self) -> float:
        return self.delta_bytes / self.runs


def bench_memory(
    db: TrackingDatabase, probe: Probe, plan: Plan, runs: int, listpack_value: int | None = None
) -> MemoryReport:
    """used_memory per run; ``listpack_value`` sets the server's hash-max-listpack-value."""
    setting = "default" if listpack_value is None else str(listpack_value)
    print(f"== memory at {runs:,} runs (hash-max-listpack-value {setting})", flush=True)
    probe.flush()
    default = str(probe.client.config_get("hash-max-listpack-value")["hash-max-listpack-value"])
    if listpack_value is not None:
        probe.client.config_set("hash-max-listpack-value", listpack_value)
    try:
        return measure_memory(db, probe, plan, runs, int(listpack_value or default))
    finally:
        probe.client.config_set("hash-max-listpack-value", default)


def measure_memory(
    db: TrackingDatabase, probe: Probe, plan: Plan, runs: int, listpack_value: int
) -> MemoryReport:
    probe.flush()
    probe.load_scripts()
    create_workers(db, plan)
    for name in STUDY_NAMES:
        db.studies.create(name)
    before = probe.used_memory()
    for spec in plan.runs(runs):
        create_run(db, spec)
    delta = probe.used_memory() - before
    groups = memory_groups(probe.client, PREFIX)
    hashes = sample_run_hashes(probe.client, PREFIX, listpack_value)
    return MemoryReport(runs, delta, groups, hashes, listpack_value)


def memory_groups(client: redis.Redis, prefix: str) -> list[MemoryGroup]:
    """MEMORY USAGE (exact: SAMPLES 0) of every key under the prefix, grouped by key type."""
    tag = "{" + prefix + "}:"
    groups = {name: MemoryGroup(name) for name, _ in KEY_GROUPS}
    groups[OTHER_KEYS] = MemoryGroup(OTHER_KEYS)
    for key in client.scan_iter(match=tag + "*", count=1000):
        rest = key[len(tag) :]
        name = next((n for n, pattern in KEY_GROUPS if re.fullmatch(pattern, rest)), OTHER_KEYS)
        group = groups[name]
        group.keys += 1
        usage = int(client.memory_usage(key, samples=0) or 0)
        encoding = str(client.object("encoding", key))
        group.bytes += usage
        group.members += key_size(client, key)
        group.encodings[encoding] += 1
        group.encoding_bytes[encoding] += usage
    return list(groups.values())


def key_size(client: redis.Redis, key: str) -> int:
    kind = client.type(key)
    sizes: dict[str, Callable[[str], int]] = {
        "set": client.scard,
        "hash": client.hlen,
        "list": client.llen,
    }
    return int(sizes[kind](key)) if kind in sizes else 0


def sample_run_hashes(
    client: redis.Redis, prefix: str, listpack_value: int, sample: int = 1000
) -> HashSample:
    """Payload of sampled run hashes and the fields whose values exceed the listpack limit."""
    keys = [
        k
        for k in client.scan_iter(match="{" + prefix + "}:run:*", count=1000)
        if re.fullmatch(r"\{[^}]+\}:run:[0-9]+", k)
    ][:sample]
    payloads, counts = [], []
    long_values: Counter[str] = Counter()
    for key in keys:
        fields = {str(k): str(v).encode() for k, v in client.hgetall(key).items()}
        payloads.append(sum(len(k.encode()) + len(v) for k, v in fields.items()))
        counts.append(len(fields))
        long_values.update(k for k, v in fields.items() if len(v) > listpack_value)
    return HashSample(len(keys), statistics.fmean(payloads), statistics.fmean(counts), long_values)


# --------------------------------------------------------------------------- report
def machine_facts_with(probe: Probe) -> dict[str, str]:
    return {
        **machine_facts(),
        "redis-py": redis.__version__,
        "redis-server": probe.server_version(),
        "merlin_tracking": git_state(),
        "load average at start (1/5/15 min)": load_average(),
    }


def results_table(reports: Sequence[SizeReport]) -> list[str]:
    lines = [
        (
            "| runs | operation | calls | mean ms | p50 ms | p99 ms | results | round trips/call "
            "(max) | client cmds/call | server cmds/call (incl. Lua) | server CPU ms/call |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for report in reports:
        for m in report.measurements:
            results = "" if m.results is None else f"{m.results:,}"
            lines.append(
                f"| {m.size:,} | {m.operation} | {m.calls} | {m.mean_ms:.3f} | "
                f"{m.percentile_ms(50):.3f} | {m.percentile_ms(99):.3f} | {results} | "
                f"{m.rt_mean:.2f} ({m.rt_max}) | {m.client_per_call:.1f} | "
                f"{m.server_per_call:.1f} | {m.server_cpu_ms:.3f} |"
            )
    return lines


def command_mix(m: Measurement, top: int = 8) -> str:
    parts = [f"{name} {calls / m.calls:.1f}" for name, calls in m.server_commands.most_common(top)]
    return ", ".join(parts)


def mix_table(report: SizeReport) -> list[str]:
    lines = ["| operation | server commands per call (top 8) |", "|---|---|"]
    for m in report.measurements:
        lines.append(f"| {m.operation} | {command_mix(m)} |")
    return lines


def scaling_table(reports: Sequence[SizeReport]) -> list[str]:
    lines = [
        (
            "| runs | filter | matches | share of runs | p50 time vs unfiltered p50 "
            "| server cmds/match |"
        ),
        "|---:|---|---:|---:|---:|---:|",
    ]
    for report in reports:
        base = find(report, "get_all (no filter)")
        for m in report.measurements:
            if not m.operation.startswith("get_all") or m is base or not m.results:
                continue
            lines.append(
                f"| {m.size:,} | {m.operation.removeprefix('get_all ')} | {m.results:,} | "
                f"{m.results / max(1, base.results or 0):.1%} | "
                f"{m.percentile_ms(50) / base.percentile_ms(50):.1%} | "
                f"{m.server_per_call / m.results:.2f} |"
            )
    return lines


def memory_table(memory: MemoryReport) -> list[str]:
    lines = [
        "| key type | keys | members/fields | encoding | bytes | bytes per run |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for group in memory.groups:
        lines.append(
            f"| {group.name} | {group.keys:,} | {group.members:,} | {group.encoding_text()} | "
            f"{group.bytes:,} | {group.bytes / memory.runs:.0f} |"
        )
    total = sum(g.bytes for g in memory.groups if g.name != OTHER_KEYS)
    lines.append(f"| **sum of run-related keys** | | | | {total:,} | {total / memory.runs:.0f} |")
    return lines


def find(report: SizeReport, operation: str) -> Measurement:
    return next(m for m in report.measurements if m.operation == operation)


def targets(reports: Sequence[SizeReport], memory: MemoryReport | None) -> list[str]:
    largest = max(reports, key=lambda r: r.size)
    lines = [filtered_target(largest)]
    get = find(largest, "get by id")
    verdict = "met" if get.rt_max <= 1 else "NOT met"
    lines.append(
        f"- **get by id in 1 round trip**: {verdict} — {get.rt_mean:.2f} round trips per call "
        f"(max {get.rt_max}), {get.server_per_call:.1f} server commands, "
        f"{get.mean_ms:.3f} ms mean at {largest.size:,} runs."
    )
    create_rts = [find(r, "create").rt_max for r in reports]
    create = find(largest, "create")
    verdict = "met" if max(create_rts) <= 2 else "NOT met"
    lines.append(
        f"- **create in at most 2 round trips**: {verdict} — {create.rt_mean:.2f} round trips "
        f"per create (max {max(create_rts)}), {create.client_per_call:.1f} client commands, "
        f"{create.server_per_call:.1f} server commands, {create.mean_ms:.3f} ms mean at "
        f"{largest.size:,} runs."
    )
    if memory is not None:
        verdict = "met" if memory.per_run <= MEMORY_TARGET else "NOT met"
        lines.append(
            f"- **at most ~{MEMORY_TARGET} bytes of Redis memory per run at {memory.runs:,} runs**:"
            f" {verdict} — {memory.per_run:.0f} bytes per run (used_memory delta "
            f"{memory.delta_bytes:,} bytes, default server settings)."
        )
    return lines


def per_match(m: Measurement) -> float:
    return m.server_per_call / max(1, m.results or 0)


def filtered_target(report: SizeReport) -> str:
    """Met when every filter costs at most ~2 server commands per match (plus a constant)."""
    base = find(report, "get_all (no filter)")
    filtered = [m for m in report.measurements if m.operation.startswith("get_all ")]
    filtered = [m for m in filtered if m is not base]
    single = [m for m in filtered if "+" not in m.operation]
    combined = [m for m in filtered if "+" in m.operation]
    worst_single = max(single, key=per_match)
    parts = [
        (
            f"single-key filters cost at most {per_match(worst_single):.2f} server commands per "
            f"match (`{worst_single.operation.removeprefix('get_all ')}`)"
        )
    ]
    for m in combined:
        parts.append(
            f"the combined filter `{m.operation.removeprefix('get_all ')}` costs "
            f"{m.server_per_call:,.0f} server commands for {m.results:,} matches "
            f"({per_match(m):.1f} per match: its work follows the smallest filter's index, "
            f"not the matches; {m.mean_ms:.1f} ms)"
        )
    if all(per_match(m) <= 2.5 for m in filtered):
        verdict = "met"
    elif all(per_match(m) <= 2.5 for m in single):
        verdict = "partly met (single-key filters only)"
    else:
        verdict = "NOT met"
    return (
        f"- **filtered get_all cost follows the matches, not the total**: {verdict} at "
        f"{report.size:,} runs — " + "; ".join(parts) + f"; unfiltered: "
        f"{base.server_per_call:,.0f} server commands, {base.mean_ms:,.1f} ms for "
        f"{base.results:,} runs."
    )


def render(
    args: argparse.Namespace,
    facts: dict[str, str],
    reports: Sequence[SizeReport],
    memory: Sequence[MemoryReport],
    total_s: float,
) -> str:
    sizes = ", ".join(f"{r.size:,}" for r in reports)
    out = [
        "# merlin_tracking store benchmarks",
        "",
        (
            "Generated by `benchmarks/bench_store.py` from a real run; the script replaces only "
            "the text between the `store` markers."
        ),
        "",
        "## How to run",
        "",
        "```sh",
        "python benchmarks/bench_store.py                     # 1k, 10k, 100k; writes this file",
        "python benchmarks/bench_store.py --sizes 1000,10000  # other sizes",
        "python benchmarks/bench_store.py --quick             # 1k only; prints, writes nothing",
        "python benchmarks/bench_store.py --output /tmp/b.md  # write the report elsewhere",
        "python benchmarks/bench_store.py --help              # every option",
        "```",
        "",
        (
            "The script starts its own `redis-server` (from `PATH`, or `--redis-server`) on a free "
            'port of 127.0.0.1 with `--save "" --appendonly no`, flushes only that server and stops '
            "it at the end. Everything goes through `TrackingDatabase.from_url(url, prefix=...)`."
        ),
        "",
        "## What is measured",
        "",
        f"- Data set (seed {args.seed}): {N_STUDIES} studies, {N_QUEUES} queues; {N_WORKERS} "
        "logical workers, each consuming 1-2 random queues, are created *before* the runs, so "
        "runs get workers attached. Each run goes to 1-3 random queues, has a workspace like "
        f"`{WORKSPACE_ROOT}/<study>_<YYYYmmdd-HHMMSS>_<i>` and a status drawn from "
        + ", ".join(f"{k} {v}%" for k, v in STATUS_WEIGHTS.items())
        + ".",
        (
            "- **create**: `db.runs.create(study, workspace, queues, status=...)`, the real path "
            "(the study is created on first use). The whole population is created through this API "
            f"one run at a time; the last {args.sample:,} creates (all of them when fewer) are timed "
            "one by one."
        ),
        "- **get**: 300 random runs by id, then by workspace.",
        (
            "- **get_all**: one warm-up call, then as many calls as fit in ~2 s (3-20). "
            f"The study filter is `{STUDY_NAMES[0]}`; the status filter is {FILTER_STATUS}; the queue "
            "and worker filters name one queue / one logical worker."
        ),
        (
            "- **delete (one run)**: `db.runs.delete(id)` on 100 random runs (a tenth of the runs "
            "when fewer); then **delete_all** once on the rest."
        ),
        (
            "- **round trips**: redis-py connection subclass counting `send_packed_command` (a "
            "pipeline is one round trip); **client cmds**: commands the client sent (an EVALSHA is "
            "one); **server cmds**: `INFO commandstats` deltas, which include the commands Lua "
            "scripts run; **server CPU**: `INFO cpu` user + system time of redis-server over the "
            "block, divided by the calls (the rest of the wall time is the client and the network)."
        ),
        (
            "- **memory**: `INFO memory` `used_memory` before and after creating "
            f"{args.memory_runs:,} runs into an empty prefix that already holds the logical workers "
            "and the studies; the delta includes every index. The breakdown sums "
            "`MEMORY USAGE key SAMPLES 0` over every key of the prefix."
        ),
        "",
        "## Machine",
        "",
        "| fact | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts.items()],
        f"| benchmark wall time | {total_s:.0f} s (sizes {sizes}) |",
        "",
        TIMING_NOTE,
        "",
        "## Targets",
        "",
        *targets(reports, memory[0] if memory else None),
        "",
        "## Results",
        "",
        *results_table(reports),
        "",
        "Populating through the API (one create per run):",
        "",
        *[
            f"- {r.size:,} runs: {r.populate_s:.1f} s ({r.create_rate:,.0f} creates/s)"
            for r in reports
        ],
        "",
        "### Where the time and the memory go",
        "",
        *notes(reports, memory[0] if memory else None),
        "",
        "### Filtered get_all against unfiltered",
        "",
        *scaling_table(reports),
        "",
        f"### Server command mix at {max(r.size for r in reports):,} runs",
        "",
        *mix_table(max(reports, key=lambda r: r.size)),
        "",
    ]
    if memory:
        out += memory_section(memory[0], "")
    for variant in memory[1:]:
        out += memory_section(
            variant,
            f" (diagnostic: server `hash-max-listpack-value` raised to {variant.listpack_value})",
        )
    return "\n".join(out)


def notes(reports: Sequence[SizeReport], memory: MemoryReport | None) -> list[str]:
    largest = max(reports, key=lambda r: r.size)
    lines = []
    for operation in ("get_all (no filter)", "create", "get by id"):
        m = find(largest, operation)
        lines.append(
            f"- {operation} at {largest.size:,} runs: {m.mean_ms:.3f} ms per call, of which "
            f"redis-server used {m.server_cpu_ms:.3f} ms CPU "
            f"({m.server_cpu_ms / m.mean_ms:.0%}); the rest is the Python client (encoding, "
            "reply parsing, building records) and the loopback network."
        )
    if memory is None:
        return lines
    groups = {g.name: g for g in memory.groups}
    run_hash = groups[KEY_GROUPS[0][0]]
    sets = [g for g in memory.groups if g.name.endswith("sets")]
    set_bytes = sum(g.bytes for g in sets)
    set_members = sum(g.members for g in sets)
    index = set_bytes + groups["run:workspace index hash"].bytes
    lines += [
        (
            f"- Memory at {memory.runs:,} runs: run hashes take {run_hash.bytes / memory.runs:.0f} "
            f"bytes per run and the indexes {index / memory.runs:.0f} bytes per run "
            f"({set_members / memory.runs:.1f} index-set memberships per run at "
            f"~{set_bytes / max(1, set_members):.0f} bytes each, plus the workspace index)."
        ),
        (
            f"- {run_hash.encodings.get('hashtable', 0):,} of {run_hash.keys:,} run hashes are "
            "hashtable-encoded instead of listpack because a value is longer than the server's "
            f"hash-max-listpack-value ({memory.listpack_value}; in {memory.hashes.sampled:,} "
            f"sampled hashes: {long_fields(memory.hashes)}): "
            f"~{run_hash.encoding_bytes['hashtable'] / max(1, run_hash.encodings['hashtable']):.0f} "
            f"bytes each instead of "
            f"~{run_hash.encoding_bytes['listpack'] / max(1, run_hash.encodings['listpack']):.0f}."
        ),
    ]
    return lines


def long_fields(hashes: HashSample) -> str:
    if not hashes.long_values:
        return "none"
    return ", ".join(f"`{name}` {count:,}" for name, count in hashes.long_values.most_common())


def memory_section(memory: MemoryReport, note: str) -> list[str]:
    return [
        f"## Memory at {memory.runs:,} runs{note}",
        "",
        (
            f"`used_memory` grew by {memory.delta_bytes:,} bytes: **{memory.per_run:.0f} bytes per "
            f"run**, indexes included (server `hash-max-listpack-value` {memory.listpack_value}). "
            f"A run hash holds {memory.hashes.fields:.1f} fields with {memory.hashes.payload:.0f} "
            "bytes of field names and JSON values on average."
        ),
        "",
        *memory_table(memory),
        "",
    ]


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated run counts (default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 runs only; write nothing")
    parser.add_argument("--sample", type=int, default=1000, help="creates timed one by one")
    parser.add_argument(
        "--memory-runs", type=int, default=5000, help="runs for the memory measurement"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--seed", type=int, default=SEED, help="data set seed")
    parser.add_argument("--output", help="markdown report (default docs/benchmarks.md)")
    parser.add_argument(
        "--redis-server", default=shutil.which("redis-server"), help="redis-server binary"
    )
    args = parser.parse_args(argv)
    args.sizes = [1000] if args.quick else [int(s.replace("_", "")) for s in args.sizes.split(",")]
    if args.output is None and not args.quick:
        args.output = str(REPO_ROOT / "docs" / "benchmarks.md")
    if not args.redis_server:
        parser.error("redis-server not found on PATH; install it or pass --redis-server")
    return args


def memory_reports(db: TrackingDatabase, probe: Probe, plan: Plan, runs: int) -> list[MemoryReport]:
    """The target measurement (server defaults), then a diagnostic with longer listpack values."""
    return [
        bench_memory(db, probe, plan, runs),
        bench_memory(db, probe, plan, runs, listpack_value=DIAGNOSTIC_LISTPACK_VALUE),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    plan = Plan(args.seed)
    with private_redis(args.redis_server) as url:
        probe = Probe(url)
        install_client(url, instrumented_client(url))
        db = TrackingDatabase.from_url(url, prefix=PREFIX)
        probe.load_scripts()
        facts = machine_facts_with(probe)
        memory = [] if args.no_memory else memory_reports(db, probe, plan, args.memory_runs)
        reports = [bench_size(db, probe, plan, size, args.sample) for size in args.sizes]
        probe.flush()
    facts["load average at end (1/5/15 min)"] = load_average()
    text = render(args, facts, reports, memory, time.perf_counter() - started)
    print()
    print(text)
    if args.output:
        merge_section(
            Path(args.output),
            f"{SECTION_START}\n{text}\n{SECTION_END}",
            SECTION_START,
            SECTION_END,
            first=True,
        )
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
