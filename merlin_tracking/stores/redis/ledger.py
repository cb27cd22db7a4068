"""Task records read from the Redis ledger (written by ``lua/lib/ledger.lua``, which documents
the keys): a run's records, its name dictionary and errors, decoded in one round trip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import redis

from merlin_tracking.ids import micros_to_datetime
from merlin_tracking.records import Task
from merlin_tracking.records.task import LETTER_STATES
from merlin_tracking.stores.redis.keys import KeySpace, run_member, text
from merlin_tracking.stores.redis.pipes import Reads

PAGE_SIZE = 1000
# A wave-1 record (its state letter alone) in one of these states ran once.
_RAN_ONCE = frozenset("srSF")


def _parse(value: str) -> tuple[str, list[str]]:
    return value[:1], value[1:].split(",")


def decode_task(
    run_id: str,
    task_id: str,
    value: str,
    created_ms: int,
    names: Mapping[str, str],
    error: str | None,
) -> Task:
    letter, parts = _parse(value)
    parts += [""] * (7 - len(parts))

    def named(i: int) -> str | None:
        return names.get(parts[i]) if parts[i] else None

    def time(i: int) -> datetime | None:
        return micros_to_datetime((created_ms + int(parts[i], 36)) * 1000) if parts[i] else None

    attempts = int(parts[0], 36) if parts[0] else 0
    if attempts == 0 and letter in _RAN_ONCE:
        attempts = 1
    times = [time(4), time(5), time(6)]
    first = next((t for t in times if t is not None), None) or micros_to_datetime(created_ms * 1000)
    return Task(
        id=task_id,
        run_id=run_id,
        state=LETTER_STATES[letter],
        attempts=attempts,
        name=named(1),
        queue=named(2),
        worker=named(3),
        queued_at=times[0],
        started_at=times[1],
        finished_at=times[2],
        error=error,
        created_at=first,
    )


def _names(flat: Mapping[bytes, bytes]) -> dict[str, str]:
    """Index -> text of a run's dictionary (``#<index>`` -> kind letter + text)."""
    found = {}
    for raw_field, raw_value in flat.items():
        field = text(raw_field)
        if field.startswith("#") and len(field) > 1:
            found[field[1:]] = text(raw_value)[1:]
    return found


def run_tasks(reads: Reads, keys: KeySpace, run_id: str) -> list[Task]:
    member = run_member(run_id)

    def queue(pipe: redis.client.Pipeline) -> None:
        pipe.hget(keys.record("run", member), "created_at")
        pipe.hgetall(keys.key("run", member, "tasks"))
        pipe.hgetall(keys.key("run", member, "dict"))
        pipe.hgetall(keys.key("run", member, "errors"))

    created, records, dictionary, errors = reads.run(queue)
    created_ms = int(created or 0) // 1000
    names = _names(dictionary)
    errs = {text(k): text(v) for k, v in errors.items()}
    tasks = [
        decode_task(run_id, text(k), text(v), created_ms, names, errs.get(text(k)))
        for k, v in records.items()
    ]
    tasks.sort(key=lambda task: (task.created_at, task.id))
    return tasks


def find_task(reads: Reads, keys: KeySpace, run_ids: Sequence[str], task_id: str) -> Task | None:
    """The task in the first of ``run_ids`` (newest first) whose ledger holds it."""
    for start in range(0, len(run_ids), PAGE_SIZE):
        page = run_ids[start : start + PAGE_SIZE]

        def queue(pipe: redis.client.Pipeline, page: Sequence[str] = page) -> None:
            for run_id in page:
                pipe.hexists(keys.key("run", run_member(run_id), "tasks"), task_id)

        for run_id, found in zip(page, reads.run(queue), strict=True):
            if found:
                return one_task(reads, keys, run_id, task_id)
    return None


def one_task(reads: Reads, keys: KeySpace, run_id: str, task_id: str) -> Task | None:
    member = run_member(run_id)

    def queue(pipe: redis.client.Pipeline) -> None:
        pipe.hget(keys.record("run", member), "created_at")
        pipe.hget(keys.key("run", member, "tasks"), task_id)
        pipe.hgetall(keys.key("run", member, "dict"))
        pipe.hget(keys.key("run", member, "errors"), task_id)

    created, value, dictionary, error = reads.run(queue)
    if value is None:
        return None
    created_ms = int(created or 0) // 1000
    return decode_task(
        run_id, task_id, text(value), created_ms, _names(dictionary), text(error) if error else None
    )
