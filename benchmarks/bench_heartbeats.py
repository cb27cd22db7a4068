"""What the beacons' heartbeats cost the Redis server, and the model for 10,000 workers.

Starts a throw-away redis-server, registers ``--workers`` physical workers (stale_after 30 s)
in a ledger that also holds runs, and sends their beats the way beacons do
(``TrackingStore.beat``: the heartbeat, and the ledger's catch-up when no beat applied it
within the last second), round after round, from one process. The server's own time per beat
(``INFO commandstats``: the scripts' time, commands inside them included; and ``INFO cpu``:
user + system CPU of redis-server) gives the model: N workers beating every T seconds cost
``N / T * time per beat`` of one core. The same is measured for the way beats went before
(a heartbeat call and a catch-up call from every beacon). The report goes between the
``heartbeats`` markers of docs/benchmarks.md.

    python benchmarks/bench_heartbeats.py           # 2,000 workers, 5 rounds; updates the doc
    python benchmarks/bench_heartbeats.py --quick   # 200 workers, 3 rounds; prints only
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_support import (  # noqa: E402
    REPO_ROOT,
    git_state,
    load_average,
    machine_facts,
    merge_section,
    private_redis,
)

from merlin_tracking import TrackingDatabase  # noqa: E402

START, END = "<!-- heartbeats:start -->", "<!-- heartbeats:end -->"
MODEL_WORKERS, MODEL_INTERVAL, TARGET_SHARE = 10_000, 10.0, 0.05


def server_usage(client: redis.Redis) -> tuple[float, float]:
    """(microseconds the server spent in commands, its CPU seconds), so far."""
    stats = client.info("commandstats")
    usec = sum(float(v["usec"]) for k, v in stats.items() if "resetstat" not in k)
    cpu = client.info("cpu")
    return usec, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def measure(
    client: redis.Redis, ids: list[str], rounds: int, one_beat: Callable[[str], Any]
) -> dict[str, float]:
    client.config_resetstat()
    usec0, cpu0 = server_usage(client)
    began = time.perf_counter()
    for _ in range(rounds):
        for worker_id in ids:
            one_beat(worker_id)
    wall = time.perf_counter() - began
    usec1, cpu1 = server_usage(client)
    beats = rounds * len(ids)
    return {
        "beats": beats,
        "command_us": (usec1 - usec0) / beats,
        "cpu_us": (cpu1 - cpu0) * 1e6 / beats,
        "beats_per_s": beats / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000, help="runs in the ledger")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--redis-server", default="redis-server")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.rounds, args.runs = 200, 3, 100
    load_start = load_average()
    began = time.monotonic()
    with private_redis(args.redis_server) as url:
        db = TrackingDatabase.from_url(url, prefix="bench_beats")
        for index in range(args.runs):
            db.runs.create(f"study_{index % 10}", f"/ws/{index}", [f"queue_{index % 20}"])
        lw = db.logical_workers.create("sim", ["queue_0", "queue_1"])
        ids = [
            db.physical_workers.create(
                f"sim@node{index:05d}", logical_worker_id=lw.id, pid=index + 1, stale_after=30
            ).id
            for index in range(args.workers)
        ]
        client = redis.Redis.from_url(url)
        store = db.store

        def now() -> datetime:
            return datetime.now(timezone.utc)

        def combined(worker_id: str) -> None:
            store.beat(worker_id, now())

        def separate(worker_id: str) -> None:
            store.heartbeat(worker_id, now())
            store.catch_up()

        combined(ids[0])  # scripts loaded
        separate(ids[0])
        results = {
            "beat (heartbeat + catch-up at most once a second)": measure(
                client, ids, args.rounds, combined
            ),
            "before: heartbeat, then catch-up, from every beacon": measure(
                client, ids, args.rounds, separate
            ),
        }
        version = client.info("server")["redis_version"]
    wall = time.monotonic() - began
    rate = MODEL_WORKERS / MODEL_INTERVAL
    rows = []
    for name, r in results.items():
        share = rate * r["cpu_us"] / 1e6
        rows.append(
            f"| {name} | {r['beats']:,} | {r['command_us']:.1f} | {r['cpu_us']:.1f} | "
            f"{share:.1%} | {'met' if share <= TARGET_SHARE else '**not met**'} |"
        )
    beat = results["beat (heartbeat + catch-up at most once a second)"]
    facts = {
        **machine_facts(),
        "redis-server": version,
        "merlin_tracking": git_state(),
        "load average at start (1/5/15 min)": load_start,
        "load average at end (1/5/15 min)": load_average(),
        "benchmark wall time": f"{wall:.0f} s",
    }
    text = "\n".join(
        [
            START,
            "# Heartbeats: what 10,000 workers cost the Redis server",
            "",
            "Generated by `benchmarks/bench_heartbeats.py`; the script replaces only the text "
            "between the `heartbeats` markers.",
            "",
            f"{args.workers:,} physical workers (stale_after 30 s) in a ledger of {args.runs:,} "
            f"runs beat {args.rounds} rounds each from one process, as beacons do. **command "
            "µs/beat**: `INFO commandstats` time of every command the beats ran (scripts with "
            "what they call); **server CPU µs/beat**: redis-server's user + system CPU over the "
            "block. The model: 10,000 workers beating every 10 s send 1,000 beats a second, so "
            "a beat's server CPU times 1,000 per second is the share of one core they take "
            f"(target: <= {TARGET_SHARE:.0%}). A beat is one script call; the catch-up it "
            "carries (stale workers, settled runs) runs for the whole ledger at most once a "
            "second, whichever beacon comes first, so its cost does not grow with the workers.",
            "",
            "| fact | value |",
            "|---|---|",
            *(f"| {key} | {value} |" for key, value in facts.items()),
            "",
            "| beats as | beats | command µs/beat | server CPU µs/beat | share of a core "
            "at 10,000 workers / 10 s | target |",
            "|---|---:|---:|---:|---:|---|",
            *rows,
            "",
            f"At {beat['cpu_us']:.1f} µs of server CPU per beat, one core would carry "
            f"{1e6 / beat['cpu_us'] * MODEL_INTERVAL:,.0f} workers beating every 10 s.",
            END,
        ]
    )
    if args.quick:
        print(text)
        return
    merge_section(Path(args.output), text, START, END, first=False)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
