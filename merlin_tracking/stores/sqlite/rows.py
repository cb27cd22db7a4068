"""Records as rows: writing a record keeps its columns and queue indexes in step with it.

Every function works inside a transaction the caller holds and is scoped to one ``ns``. A
record's row is always written whole from the record itself (``fields`` from ``to_fields()``,
columns from its attributes), so what is indexed is exactly what is stored. Relationship sets
are read from the link rows (see ``schema``) when a record is loaded for a caller.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence, Sized
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from merlin_tracking.ids import datetime_to_micros, run_sequence
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Record,
    Run,
    WorkerStatus,
)
from merlin_tracking.records.codec import dumps

R = TypeVar("R", bound=Record)

# Table of each entity (entity names are also the table names) and its indexed columns.
COLUMNS: dict[str, tuple[str, ...]] = {
    "study": ("name",),
    "run": ("study_id", "workspace", "status", "settle_at"),
    "logical_worker": ("name",),
    "physical_worker": (
        "name",
        "status",
        "host",
        "logical_worker_id",
        "alive_until",
        "job_id",
    ),
}
UNIQUE = {"study": "name", "run": "workspace", "physical_worker": "name"}
QUEUE_INDEX = {"run": ("run_queue", "run_id"), "logical_worker": ("lw_queue", "worker_id")}
# Relationship sets read with a record: name -> (table, owner column, member column). The run's
# ``workers`` is a record field rather than a relation, but it is stored as links all the same.
LINKS: dict[str, dict[str, tuple[str, str, str]]] = {
    "study": {"runs": ("run", "study_id", "id")},
    "run": {"workers": ("run_worker", "run_id", "worker_id")},
    "logical_worker": {
        "runs": ("run_worker", "worker_id", "run_id"),
        "physical_workers": ("physical_worker", "logical_worker_id", "id"),
    },
    "physical_worker": {},
}
# Fields whose truth is the link rows, so they are left out of ``fields``.
LINKED_FIELDS = {"run": "workers"}


#: Values bound per ``IN (...)`` list: with a few lists per statement this stays below even
#: the 999 variables of SQLite before 3.32. Values are always bound, never passed as a JSON
#: array, because ``json_each`` cuts text at a NUL character.
BATCH = 200


def batches(values: Iterable[str]) -> Iterator[list[str]]:
    """Distinct ``values`` in lists of at most ``BATCH``."""
    items = list(dict.fromkeys(values))
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def marks(values: Sized) -> str:
    """``?, ?, ...`` for an ``IN (...)`` list of ``values`` (``IN ()`` matches nothing)."""
    return ", ".join("?" * len(values))


def alive_until(worker: PhysicalWorker) -> int | None:
    """Microseconds until which a RUNNING worker reads alive (None: never stale, or not
    RUNNING): the indexed column that finds stale workers without reading every worker."""
    if worker.status is not WorkerStatus.RUNNING or worker.stale_after is None:
        return None
    last = worker.heartbeat_timestamp or worker.created_at
    return datetime_to_micros(last) + round(worker.stale_after * 1_000_000)


def settle_at(run: Run) -> int | None:
    """Microseconds of a run's ``settle_until``: the indexed column that finds the runs whose
    settle time passed without reading every run."""
    return None if run.settle_until is None else datetime_to_micros(run.settle_until)


# Columns computed from a record rather than read from one of its attributes.
_DERIVED: dict[str, Any] = {"alive_until": alive_until, "settle_at": settle_at}


def _column_values(record: Record) -> list[Any]:
    values = [
        _DERIVED[name](record) if name in _DERIVED else getattr(record, name)
        for name in COLUMNS[record.ENTITY]
    ]
    return [value.value if isinstance(value, Enum) else value for value in values]


def next_run_sequence(conn: sqlite3.Connection, ns: str, at_least: int = 0) -> int:
    """Take the prefix's next run number (or raise the counter to ``at_least``, for imports)."""
    row = conn.execute("SELECT last FROM sequence WHERE ns = ? AND name = 'run'", (ns,)).fetchone()
    last = 0 if row is None else int(row[0])
    number = max(last, at_least) if at_least else last + 1
    conn.execute(
        "INSERT OR REPLACE INTO sequence (ns, name, last) VALUES (?, 'run', ?)", (ns, number)
    )
    return number


def _fields_text(record: Record) -> str:
    fields = record.to_fields()
    linked = LINKED_FIELDS.get(record.ENTITY)
    if linked is not None:
        fields.pop(linked, None)
    return dumps(fields)


def insert(conn: sqlite3.Connection, ns: str, record: Record) -> None:
    entity = record.ENTITY
    columns = COLUMNS[entity]
    values = [ns, record.id, *_column_values(record), _fields_text(record)]
    names = ["ns", "id", *columns, "fields"]
    if isinstance(record, Run):
        names.append("seq")
        values.append(int(run_sequence(record.id) or 0))
    conn.execute(f"INSERT INTO {entity} ({', '.join(names)}) VALUES ({marks(values)})", values)
    if isinstance(record, (Run, LogicalWorker)):
        _sync_queues(conn, ns, record, (), record.queues)


def update(conn: sqlite3.Connection, ns: str, old: R, new: R) -> None:
    """Store ``new`` over ``old``, assigning only columns that changed.

    Assigning a foreign-key column re-checks it even when the value is unchanged, so a record
    whose reference was broken by hand stays writable until garbage collection repairs it.
    """
    entity = new.ENTITY
    changes = {
        column: value
        for column, before, value in zip(
            COLUMNS[entity], _column_values(old), _column_values(new), strict=True
        )
        if before != value
    }
    changes["fields"] = _fields_text(new)
    assignments = ", ".join(f"{column} = ?" for column in changes)
    conn.execute(
        f"UPDATE {entity} SET {assignments} WHERE ns = ? AND id = ?",
        (*changes.values(), ns, new.id),
    )
    if isinstance(old, (Run, LogicalWorker)) and isinstance(new, (Run, LogicalWorker)):
        _sync_queues(conn, ns, new, old.queues, new.queues)


def _sync_queues(
    conn: sqlite3.Connection, ns: str, record: Record, old: Sequence[str], new: Sequence[str]
) -> None:
    table, owner = QUEUE_INDEX[record.ENTITY]
    for queue in set(old) - set(new):
        conn.execute(
            f"DELETE FROM {table} WHERE ns = ? AND {owner} = ? AND queue = ?",
            (ns, record.id, queue),
        )
    for queue in sorted(set(new) - set(old)):
        conn.execute(
            f"INSERT OR IGNORE INTO {table} (ns, {owner}, queue) VALUES (?, ?, ?)",
            (ns, record.id, queue),
        )


def exists(conn: sqlite3.Connection, ns: str, entity: str, record_id: str) -> bool:
    row = conn.execute(f"SELECT 1 FROM {entity} WHERE ns = ? AND id = ?", (ns, record_id))
    return row.fetchone() is not None


def id_by_unique(conn: sqlite3.Connection, ns: str, entity: str, value: str) -> str | None:
    """Id of the record whose unique field (study name, workspace, node name) is ``value``."""
    column = UNIQUE.get(entity)
    if column is None:
        return None
    row = conn.execute(f"SELECT id FROM {entity} WHERE ns = ? AND {column} = ?", (ns, value))
    found = row.fetchone()
    return None if found is None else str(found[0])


def load(conn: sqlite3.Connection, ns: str, record_type: type[R], record_id: str) -> R | None:
    """The stored record without its relationship sets: the base of a read-modify-write."""
    row = conn.execute(
        f"SELECT fields FROM {record_type.ENTITY} WHERE ns = ? AND id = ?", (ns, record_id)
    ).fetchone()
    return None if row is None else record_type.from_fields(record_id, json.loads(row[0]))


def read(
    conn: sqlite3.Connection, ns: str, record_type: type[R], ids: Sequence[str], now: datetime
) -> dict[str, R]:
    """Records by id with their relationship sets, as callers see them (liveness applied)."""
    records: dict[str, R] = {}
    for batch in batches(ids):
        records.update(_read_batch(conn, ns, record_type, batch, now))
    return records


def _read_batch(
    conn: sqlite3.Connection, ns: str, record_type: type[R], ids: list[str], now: datetime
) -> dict[str, R]:
    entity = record_type.ENTITY
    rows = conn.execute(
        f"SELECT id, fields FROM {entity} WHERE ns = ? AND id IN ({marks(ids)})", (ns, *ids)
    ).fetchall()
    links: dict[str, dict[str, list[str]]] = {}
    for name, (table, owner, member) in LINKS[entity].items():
        grouped: dict[str, list[str]] = {}
        for owner_id, member_id in conn.execute(
            f"SELECT {owner}, {member} FROM {table} WHERE ns = ? AND {owner} IN ({marks(ids)})",
            (ns, *ids),
        ):
            grouped.setdefault(owner_id, []).append(member_id)
        links[name] = grouped
    records: dict[str, R] = {}
    for record_id, text in rows:
        fields = json.loads(text)
        relations = {name: grouped.get(record_id, []) for name, grouped in links.items()}
        linked = LINKED_FIELDS.get(entity)
        if linked is not None:
            members = sorted(relations.pop(linked))
            if members:
                fields[linked] = dumps(members)
        record = record_type.from_fields(record_id, fields, relations)
        if isinstance(record, PhysicalWorker):
            record = with_liveness(record, now)  # type: ignore[assignment]
        records[record_id] = record
    return records


def with_liveness(worker: PhysicalWorker, now: datetime) -> PhysicalWorker:
    """A RUNNING worker silent for longer than ``stale_after`` reads as STALLED (local clock)."""
    if worker.status is not WorkerStatus.RUNNING or worker.stale_after is None:
        return worker
    last = worker.heartbeat_timestamp or worker.created_at
    if last + timedelta(seconds=worker.stale_after) < now:
        return worker.replace(status=WorkerStatus.STALLED)
    return worker


def link_consumers(
    conn: sqlite3.Connection, ns: str, run_id: str, queues: Iterable[str]
) -> list[str]:
    """Attach every logical worker consuming one of ``queues`` to the run; return those new."""
    consumers: set[str] = set()
    for batch in batches(queues):
        found = conn.execute(
            f"SELECT worker_id FROM lw_queue WHERE ns = ? AND queue IN ({marks(batch)})",
            (ns, *batch),
        )
        consumers.update(str(worker_id) for (worker_id,) in found)
    return [worker_id for worker_id in sorted(consumers) if link(conn, ns, run_id, worker_id)]


def link(conn: sqlite3.Connection, ns: str, run_id: str, worker_id: str) -> bool:
    cursor = conn.execute(
        "INSERT OR IGNORE INTO run_worker (ns, run_id, worker_id) VALUES (?, ?, ?)",
        (ns, run_id, worker_id),
    )
    return cursor.rowcount > 0


def add_queues(conn: sqlite3.Connection, ns: str, run: Run, queues: Iterable[str]) -> Run:
    """The run with ``queues`` added (kept sorted once any is added, as in the Redis store) and
    the consumers of the added queues attached."""
    added = [queue for queue in dict.fromkeys(queues) if queue not in run.queues]
    if not added:
        return run
    updated = run.replace(queues=sorted({*run.queues, *added}))
    update(conn, ns, run, updated)
    link_consumers(conn, ns, run.id, added)
    return updated
