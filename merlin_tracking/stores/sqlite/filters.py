"""``find_ids`` in SQL: each filter key is one indexed condition; keys AND, values OR.

A key listing more values than one statement may bind is matched in batches and intersected
in Python, so a filter may list any number of values.
"""

from __future__ import annotations

import sqlite3

from merlin_tracking.errors import InvalidFilterError
from merlin_tracking.stores.base import Filters
from merlin_tracking.stores.sqlite.rows import BATCH, batches, marks

# entity -> filter key -> (column, None) for a column of the record's own table, or
# (column, (table, owner column)) for a column of a link or queue index table.
_KEYS: dict[str, dict[str, tuple[str, tuple[str, str] | None]]] = {
    "study": {"name": ("name", None)},
    "run": {
        "study_id": ("study_id", None),
        "status": ("status", None),
        "queues": ("queue", ("run_queue", "run_id")),
        "workers": ("worker_id", ("run_worker", "run_id")),
    },
    "logical_worker": {
        "name": ("name", None),
        "queues": ("queue", ("lw_queue", "worker_id")),
    },
    "physical_worker": {
        name: (name, None) for name in ("logical_worker_id", "name", "status", "host", "job_id")
    },
}


def _condition(ns: str, entity: str, key: str, values: list[str]) -> tuple[str, list[str]]:
    try:
        column, via = _KEYS[entity][key]
    except KeyError:
        raise InvalidFilterError(f"unknown {entity} filter {key!r}") from None
    if via is None:
        return f"{column} IN ({marks(values)})", values
    table, owner = via
    sql = f"id IN (SELECT {owner} FROM {table} WHERE ns = ? AND {column} IN ({marks(values)}))"
    return sql, [ns, *values]


def _select(
    conn: sqlite3.Connection, entity: str, conditions: list[str], params: list[str]
) -> list[str]:
    found = conn.execute(f"SELECT id FROM {entity} WHERE {' AND '.join(conditions)}", params)
    return [str(record_id) for (record_id,) in found]


def find_ids(conn: sqlite3.Connection, ns: str, entity: str, filters: Filters) -> list[str]:
    """Ids of ``entity`` records under ``ns`` matching every filter (all when none)."""
    conditions, params = ["ns = ?"], [ns]
    long_keys = []
    for key, values in filters.items():
        if len(values) > BATCH:
            long_keys.append(key)
            continue
        condition, bound = _condition(ns, entity, key, list(values))
        conditions.append(condition)
        params += bound
    ids = _select(conn, entity, conditions, params)
    for key in long_keys:
        matching: set[str] = set()
        for batch in batches(filters[key]):
            condition, bound = _condition(ns, entity, key, batch)
            matching.update(_select(conn, entity, ["ns = ?", condition], [ns, *bound]))
        ids = [record_id for record_id in ids if record_id in matching]
    return ids
