"""Connection handling: fork safety and per-process clients (TLS: ``test_tls.py``)."""

from __future__ import annotations

import multiprocessing
import os

from merlin_tracking import TrackingDatabase
from merlin_tracking.stores.redis.connection import client_for


def _child_uses_inherited_database(db: TrackingDatabase, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        run = db.runs.create("forked", f"/ws/child-{os.getpid()}", ["q"])
        queue.put(("ok", run.id, id(client_for(db.store._raw_url))))  # type: ignore[attr-defined]
    except Exception as exc:  # pragma: no cover - reported to the parent
        queue.put(("error", repr(exc), 0))


def test_database_survives_fork(redis_db: TrackingDatabase) -> None:
    redis_db.runs.create("forked", "/ws/parent", ["q"])  # the parent has a live connection now
    parent_client = id(client_for(redis_db.store._raw_url))  # type: ignore[attr-defined]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [
        context.Process(target=_child_uses_inherited_database, args=(redis_db, queue))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(30)
    assert all(status == "ok" for status, _, _ in results), results
    assert all(client_id != parent_client for _, _, client_id in results)
    # The parent's connection still works and sees every child's run.
    assert len(redis_db.runs.get_all({"study_id": redis_db.studies.get("forked").id})) == 5
