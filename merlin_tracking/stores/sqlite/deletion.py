"""Deleting records, inside the write transaction the store holds, scoped to one ``ns``.

Link and index rows go with their records by cascade (``schema``); what a cascade cannot do is
done here: a study's runs are deleted or detached, a logical worker's physical workers detached.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from merlin_tracking.stores.sqlite import rows


def delete_records(conn: sqlite3.Connection, ns: str, entity: str, ids: Sequence[str]) -> int:
    """Delete the ``entity`` rows with these ids; return how many there were."""
    deleted = 0
    for batch in rows.batches(ids):
        cursor = conn.execute(
            f"DELETE FROM {entity} WHERE ns = ? AND id IN ({rows.marks(batch)})", (ns, *batch)
        )
        deleted += cursor.rowcount
    return deleted


def delete_study(conn: sqlite3.Connection, ns: str, study_id: str, remove_runs: bool) -> bool:
    """Delete the study and its runs (or keep them, detached); False if there was no study."""
    if not rows.exists(conn, ns, "study", study_id):
        return False
    if remove_runs:
        conn.execute("DELETE FROM run WHERE ns = ? AND study_id = ?", (ns, study_id))
    else:  # kept, detached: study_id is a required field, stored as JSON null
        conn.execute(
            "UPDATE run SET study_id = NULL, fields = json_set(fields, '$.study_id', 'null') "
            "WHERE ns = ? AND study_id = ?",
            (ns, study_id),
        )
    return delete_records(conn, ns, "study", [study_id]) == 1


def delete_logical_workers(conn: sqlite3.Connection, ns: str, worker_ids: Sequence[str]) -> int:
    """Delete the logical workers, detaching their physical workers; return how many."""
    # Links to runs and queue rows go by cascade; physical workers are detached here.
    for batch in rows.batches(worker_ids):
        conn.execute(
            "UPDATE physical_worker SET logical_worker_id = NULL, "
            "fields = json_remove(fields, '$.logical_worker_id') "
            f"WHERE ns = ? AND logical_worker_id IN ({rows.marks(batch)})",
            (ns, *batch),
        )
    return delete_records(conn, ns, "logical_worker", worker_ids)
