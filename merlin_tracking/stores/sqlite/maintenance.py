"""Dangling references: impossible through the store (foreign keys), yet a file edited by hand
with foreign keys off (the ``sqlite3`` shell's default) can hold them; garbage collection finds
and drops them here, in the terms of ``DanglingReference``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from merlin_tracking.stores.base import DanglingReference

# Rows that only index or link a record: (table, owner column, owner table).
_INDEX_ROWS = (
    ("run_queue", "run_id", "run"),
    ("task", "run_id", "run"),
    ("run_waiting", "run_id", "run"),
    ("lw_queue", "worker_id", "logical_worker"),
)

_QUERIES = (
    # (owner type, field, SQL giving (owner id, missing id))
    (
        "run",
        "study_id",
        "SELECT r.id, r.study_id FROM run AS r WHERE r.ns = :ns AND r.study_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM study AS s WHERE s.ns = r.ns AND s.id = r.study_id)",
    ),
    (
        "run",
        "workers",
        "SELECT l.run_id, l.worker_id FROM run_worker AS l WHERE l.ns = :ns "
        "AND EXISTS (SELECT 1 FROM run AS r WHERE r.ns = l.ns AND r.id = l.run_id) "
        "AND NOT EXISTS (SELECT 1 FROM logical_worker AS w WHERE w.ns = l.ns AND w.id = l.worker_id)",
    ),
    (
        "logical_worker",
        "runs",
        "SELECT l.worker_id, l.run_id FROM run_worker AS l WHERE l.ns = :ns "
        "AND NOT EXISTS (SELECT 1 FROM run AS r WHERE r.ns = l.ns AND r.id = l.run_id)",
    ),
    (
        "physical_worker",
        "logical_worker_id",
        "SELECT p.id, p.logical_worker_id FROM physical_worker AS p WHERE p.ns = :ns "
        "AND p.logical_worker_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM logical_worker AS w "
        "WHERE w.ns = p.ns AND w.id = p.logical_worker_id)",
    ),
)


def find_dangling(conn: sqlite3.Connection, ns: str) -> list[DanglingReference]:
    found = [
        DanglingReference(owner, str(owner_id), field, str(missing))
        for owner, field, sql in _QUERIES
        for owner_id, missing in conn.execute(sql, {"ns": ns})
    ]
    for table, column, parent in _INDEX_ROWS:
        orphans = conn.execute(
            f"SELECT DISTINCT t.{column} FROM {table} AS t WHERE t.ns = :ns AND NOT EXISTS "
            f"(SELECT 1 FROM {parent} AS p WHERE p.ns = t.ns AND p.id = t.{column})",
            {"ns": ns},
        )
        found += [DanglingReference("index", table, column, str(m)) for (m,) in orphans]
    return found


def remove_dangling(
    conn: sqlite3.Connection, ns: str, references: Sequence[DanglingReference]
) -> int:
    """Drop each reference (clear the field, delete the link or index rows); return the count."""
    index_columns = {table: column for table, column, _ in _INDEX_ROWS}
    for ref in references:
        owner, missing = ref.owner_id, ref.missing
        if ref.owner_type == "run" and ref.field == "study_id":
            conn.execute(
                "UPDATE run SET study_id = NULL, fields = json_set(fields, '$.study_id', 'null') "
                "WHERE ns = ? AND id = ? AND study_id = ?",
                (ns, owner, missing),
            )
        elif ref.owner_type in ("run", "logical_worker"):
            run_id, worker_id = (owner, missing) if ref.owner_type == "run" else (missing, owner)
            conn.execute(
                "DELETE FROM run_worker WHERE ns = ? AND run_id = ? AND worker_id = ?",
                (ns, run_id, worker_id),
            )
        elif ref.owner_type == "physical_worker":
            conn.execute(
                "UPDATE physical_worker SET logical_worker_id = NULL, "
                "fields = json_remove(fields, '$.logical_worker_id') "
                "WHERE ns = ? AND id = ? AND logical_worker_id = ?",
                (ns, owner, missing),
            )
        elif ref.owner_type == "index" and ref.owner_id in index_columns:
            column = index_columns[ref.owner_id]
            conn.execute(f"DELETE FROM {ref.owner_id} WHERE ns = ? AND {column} = ?", (ns, missing))
    return len(references)
