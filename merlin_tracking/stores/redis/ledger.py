"""Task records read from the Redis ledger (written by ``lua/lib/ledger.lua``, which documents
the keys): a run's records, its name dictionary and errors, decoded in one round trip; and
filtered reads through the task index (``find_tasks``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import redis

from merlin_tracking.ids import micros_to_datetime
from merlin_tracking.records import Task
from merlin_tracking.records.status import TaskState
from merlin_tracking.records.task import LETTER_STATES, STATE_LETTERS, task_matches
from merlin_tracking.stores.redis.keys import (
    KeySpace,
    pack_task_id,
    run_member,
    text,
    unpack_task_id,
    value_hash,
)
from merlin_tracking.stores.redis.pipes import Reads

PAGE_SIZE = 1000
# A record in one of these states with no attempt written ran once (the scripts leave that
# one attempt out; a wave-1 record is its state letter alone).
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
    parts += [""] * (8 - len(parts))

    def named(i: int) -> str | None:
        return names.get(parts[i]) if parts[i] else None

    # A record with a row (its eighth field) counts each time from the one before it; an
    # older record counts them all from the run's creation.
    chained, base = bool(parts[7]), created_ms
    times: list[datetime | None] = []
    for i in (4, 5, 6):
        if parts[i]:
            ms = (base if chained else created_ms) + int(parts[i], 36)
            base = ms
            times.append(micros_to_datetime(ms * 1000))
        else:
            times.append(None)
    attempts = int(parts[0], 36) if parts[0] else 0
    if attempts == 0 and letter in _RAN_ONCE:
        attempts = 1
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
    tasks = []
    for field, value in records.items():
        task_id = unpack_task_id(field)
        tasks.append(
            decode_task(run_id, task_id, text(value), created_ms, names, errs.get(task_id))
        )
    tasks.sort(key=lambda task: (task.created_at, task.id))
    return tasks


def _task_fields(task_id: str, old_ledgers: bool) -> list[bytes]:
    """Fields a task's record may sit under: its packed id, and for a ledger from before the
    row index its text."""
    fields = [pack_task_id(task_id)]
    if old_ledgers and fields[0] != task_id.encode("utf-8"):
        fields.append(task_id.encode("utf-8"))
    return fields


def find_task(
    reads: Reads, keys: KeySpace, run_ids: Sequence[str], task_id: str, old_ledgers: bool
) -> Task | None:
    """The task in the first of ``run_ids`` (newest first) whose ledger holds it; with
    ``old_ledgers``, also under its text field (ledgers from before the row index)."""
    fields = _task_fields(task_id, old_ledgers)
    for start in range(0, len(run_ids), PAGE_SIZE):
        page = run_ids[start : start + PAGE_SIZE]

        def queue(pipe: redis.client.Pipeline, page: Sequence[str] = page) -> None:
            for run_id in page:
                tasks = keys.key("run", run_member(run_id), "tasks")
                for field in fields:
                    pipe.hexists(tasks, field)

        found = reads.run(queue)
        for i, run_id in enumerate(page):
            if any(found[len(fields) * i : len(fields) * (i + 1)]):
                return one_task(reads, keys, run_id, task_id, old_ledgers)
    return None


def one_task(
    reads: Reads, keys: KeySpace, run_id: str, task_id: str, old_ledgers: bool = False
) -> Task | None:
    """One record; with ``old_ledgers``, also looked up under its text field."""
    member = run_member(run_id)
    fields = _task_fields(task_id, old_ledgers)

    def queue(pipe: redis.client.Pipeline) -> None:
        pipe.hget(keys.record("run", member), "created_at")
        pipe.hmget(keys.key("run", member, "tasks"), fields)
        pipe.hgetall(keys.key("run", member, "dict"))
        pipe.hget(keys.key("run", member, "errors"), task_id)

    created, values, dictionary, error = reads.run(queue)
    value = next((v for v in values if v is not None), None)
    if value is None:
        return None
    created_ms = int(created or 0) // 1000
    return decode_task(
        run_id, task_id, text(value), created_ms, _names(dictionary), text(error) if error else None
    )


# ---------------------------------------------------------------------------- filtered reads
# A row of {p}:run:<n>:rows: the id's 16 bytes, the state letter, then name#, queue# and
# worker# a byte each (0: none; 255: that number or a higher one, read the record). Rows past
# the run's count (the dictionary's "*") are padding, letter 0.
ROW = 20
_STATE_AT = 16
_COLUMN_AT = {"name": 17, "queue": 18, "worker": 19}
_TOP = 255
_KIND = {"name": "n", "queue": "q", "worker": "w"}
_NO_ID = bytes(16)
_NO_RECORD = (0, ord("-"))  # padding, a deleted record
RUN_PAGE = 200


def index_keys(keys: KeySpace, filters: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """For each indexed filter, the run sets whose union holds the runs it can match."""
    found: dict[str, list[str]] = {}
    if "state" in filters:
        found["state"] = [
            keys.key("task", "s", STATE_LETTERS[TaskState(s)]) for s in filters["state"]
        ]
    for name, kind in _KIND.items():
        if name in filters:
            found[name] = [keys.key("task", kind, value_hash(v)) for v in filters[name]]
    return found


def _column_values(dictionary: Mapping[str, str], kind: str, values: Sequence[str]) -> set[int]:
    """Column bytes the rows of ``values`` hold (255 stands for every number from 255 on: those
    rows are checked on their records)."""
    wanted: set[int] = set()
    for value in values:
        idx = dictionary.get(kind + value)
        if idx is not None:
            wanted.add(min(int(idx, 36), _TOP))
    return wanted


def matching_rows(
    rows: bytes, dictionary: Mapping[str, str], filters: Mapping[str, Sequence[str]]
) -> list[int]:
    """Row numbers whose columns match every filter (a superset where a column saturated:
    the caller checks the records)."""
    count = min(len(rows) // ROW, int(dictionary.get("*", "0")))
    columns: list[tuple[int, set[int]]] = []
    for name, kind in _KIND.items():
        if name in filters:
            wanted = _column_values(dictionary, kind, filters[name])
            if not wanted:
                return []
            columns.append((_COLUMN_AT[name], wanted))
    if "state" in filters:
        letters = rows[_STATE_AT::ROW]
        candidates: list[int] = []
        for state in filters["state"]:
            letter = ord(STATE_LETTERS[TaskState(state)])
            at = letters.find(letter)
            while at != -1:
                candidates.append(at)
                at = letters.find(letter, at + 1)
        candidates.sort()
    else:
        at, wanted = columns[0]
        column = rows[at::ROW]
        candidates = []
        for value in wanted:
            i = column.find(value)
            while i != -1:
                candidates.append(i)
                i = column.find(value, i + 1)
        candidates.sort()
    return [
        k
        for k in candidates
        if k < count
        and rows[k * ROW + _STATE_AT] not in _NO_RECORD
        and all(rows[k * ROW + at] in wanted for at, wanted in columns)
    ]


def _row_id(rows: bytes, k: int, xids: Mapping[bytes, bytes]) -> str:
    raw = rows[k * ROW : k * ROW + 16]
    other = xids.get(str(k).encode()) if raw == _NO_ID else None
    return text(other) if other is not None else str(uuid.UUID(bytes=raw))


def find_tasks(
    reads: Reads,
    keys: KeySpace,
    run_ids: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    limit: int | None,
) -> list[Task]:
    """Records of ``run_ids`` (in that order) matching ``filters``, through each run's row
    index: one read of the rows and dictionary per run, then only the matching records."""
    found: list[Task] = []
    for start in range(0, len(run_ids), RUN_PAGE):
        page = run_ids[start : start + RUN_PAGE]

        def queue_index(pipe: redis.client.Pipeline, page: Sequence[str] = page) -> None:
            for run_id in page:
                member = run_member(run_id)
                pipe.hget(keys.record("run", member), "created_at")
                pipe.get(keys.key("run", member, "rows"))
                pipe.hgetall(keys.key("run", member, "dict"))
                pipe.hgetall(keys.key("run", member, "xids"))

        replies = reads.run(queue_index)
        wanted: list[tuple[str, int, dict[str, str], list[str]]] = []
        for i, run_id in enumerate(page):
            created, rows, raw_dict, xids = replies[4 * i : 4 * i + 4]
            if not rows:
                continue
            dictionary = {text(f): text(v) for f, v in raw_dict.items()}
            ids = [_row_id(rows, k, xids) for k in matching_rows(rows, dictionary, filters)]
            if ids:
                wanted.append((run_id, int(created or 0) // 1000, _names(raw_dict), ids))
        if not wanted:
            continue

        def queue_records(pipe: redis.client.Pipeline, wanted: list[Any] = wanted) -> None:
            for run_id, _, _, ids in wanted:
                member = run_member(run_id)
                pipe.hmget(keys.key("run", member, "tasks"), [pack_task_id(t) for t in ids])
                pipe.hmget(keys.key("run", member, "errors"), ids)

        records = reads.run(queue_records)
        for i, (run_id, created_ms, names, ids) in enumerate(wanted):
            values, errors = records[2 * i], records[2 * i + 1]
            tasks = [
                decode_task(run_id, task_id, text(value), created_ms, names, text(e) if e else None)
                for task_id, value, e in zip(ids, values, errors, strict=True)
                if value is not None
            ]
            tasks = [t for t in tasks if task_matches(t, filters)]
            tasks.sort(key=lambda task: (task.created_at, task.id))
            found += tasks
            if limit is not None and len(found) >= limit:
                return found[:limit]
    return found
