"""A run written the way wave 1 wrote it, for the tests of reading and migrating old ledgers."""

from __future__ import annotations

import redis


def write_wave_1_run(raw_redis: redis.Redis, prefix: str, run_id: str) -> str:
    """Turn run ``run_id`` (created INITIALIZED) into a wave-1 record: version 1, RUNNING, three
    tasks as bare state letters (one succeeded, one started, one queued) with no row index, and
    in the plain set of settling runs. Returns the run's hash key."""
    tag = "{" + prefix + "}"
    key = f"{tag}:run:{run_id[1:]}"
    raw_redis.hset(key + ":tasks", mapping={"done": "S", "busy": "s", "waiting": "q"})
    counters = {"tasks_queued": 3, "tasks_started": 2, "tasks_succeeded": 1}
    raw_redis.hset(key, mapping={**counters, "v": "1", "status": '"RUNNING"'})
    raw_redis.smove(f"{tag}:run:status:INITIALIZED", f"{tag}:run:status:RUNNING", run_id[1:])
    raw_redis.sadd(f"{tag}:run:settling", run_id[1:])
    return key
