"""Export/import of runs and garbage collection, against a real Redis."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import redis

from merlin_tracking import (
    DuplicateEntityError,
    InvalidRecordError,
    RunStatus,
    TrackingDatabase,
    WorkerStatus,
)
from merlin_tracking.records.events import COUNTED_AT_WORKER, TaskEvent, TaskEventKind


def _run_with_history(db: TrackingDatabase) -> str:
    lw = db.logical_workers.create("sim", ["sim"])
    db.physical_workers.create("sim@n1", pid=11, host="n1", logical_worker_id=lw.id)
    run = db.runs.create("sweep", "/ws/ü 1", ["sim"], parameters={"lr": 0.5}, owner="ana")
    db.runs.record_events(
        [
            TaskEvent(run.id, "t1", TaskEventKind.PUBLISHED, "sim"),
            TaskEvent(run.id, "t1", TaskEventKind.STARTED),
            TaskEvent(run.id, "t1", TaskEventKind.SUCCEEDED),
        ]
    )
    return run.id


def test_export_import_round_trip_into_another_ledger(redis_url: str, prefix: str) -> None:
    source = TrackingDatabase.from_url(redis_url, prefix=prefix + "_src")
    target = TrackingDatabase.from_url(redis_url, prefix=prefix + "_dst")
    run_id = _run_with_history(source)
    document = json.loads(json.dumps(source.export_run("/ws/ü 1")))
    assert document["schema"] == "merlin_tracking.export/1"
    assert [w["name"] for w in document["physical_workers"]] == ["sim@n1"]
    restored = target.import_run(document)
    original = source.runs.get(run_id)
    assert restored.id == original.id
    assert restored.status is RunStatus.COMPLETED
    assert restored.counters == original.counters
    assert restored.parameters == {"lr": 0.5}
    assert restored.additional_data == {"owner": "ana"}
    assert restored.created_at == original.created_at
    assert restored.workers == original.workers
    assert target.studies.get("sweep").runs == (run_id,)
    lw = target.logical_workers.get(original.workers[0])
    assert lw.runs == (run_id,)
    assert target.physical_workers.get("sim@n1").logical_worker_id == lw.id
    with pytest.raises(DuplicateEntityError):
        target.import_run(document)


def test_import_after_delete_restores_the_same_run(db: TrackingDatabase) -> None:
    run_id = _run_with_history(db)
    document = db.export_run(run_id)
    db.runs.delete(run_id)
    assert db.import_run(document).id == run_id
    assert db.runs.get("/ws/ü 1").tasks_succeeded == 1


def test_an_imported_settling_run_still_completes_once_settled(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws/settling", [])
    db.runs.record_events(
        [TaskEvent(run.id, "t", TaskEventKind.RECEIVED, "q", flags=COUNTED_AT_WORKER)], settle=0.5
    )
    db.runs.record_events([TaskEvent(run.id, "t", TaskEventKind.RAN)])
    document = db.export_run(run.id)
    db.runs.delete(run.id)
    imported = db.import_run(document)
    assert imported.status is RunStatus.RUNNING and imported.settle_until is not None
    time.sleep(0.6)
    assert db.runs.settle() == [run.id]
    assert db.runs.get(run.id).status is RunStatus.COMPLETED


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"schema": "other"},
        {"schema": "merlin_tracking.export/1", "run": "x"},
        {"schema": "merlin_tracking.export/1", "run": {"id": "x", "bogus": 1}},
    ],
)
def test_import_refuses_bad_documents_and_writes_nothing(
    db: TrackingDatabase, document: dict[str, object]
) -> None:
    with pytest.raises(InvalidRecordError):
        db.import_run(document)
    assert db.info()["counts"] == {"study": 0, "run": 0, "logical_worker": 0, "physical_worker": 0}


def test_gc_removes_old_stopped_workers_and_idle_logical_workers(db: TrackingDatabase) -> None:
    busy = db.logical_workers.create("busy", ["q"])
    db.runs.create("s", "/ws", ["q"])
    idle = db.logical_workers.create("idle", ["other"])
    old = db.physical_workers.create("idle@n", pid=1, logical_worker_id=idle.id)
    db.physical_workers.mark_stopped(old.id)
    live = db.physical_workers.create("busy@n", pid=2, logical_worker_id=busy.id)
    preview = db.collect_garbage(timedelta(0), dry_run=True)
    assert preview == {"physical_workers": [old.id], "logical_workers": [idle.id], "dangling": []}
    assert db.physical_workers.get(old.id).status is WorkerStatus.STOPPED  # dry run kept it
    assert db.collect_garbage(timedelta(0)) == preview
    assert [pw.id for pw in db.physical_workers.get_all()] == [live.id]
    assert [lw.id for lw in db.logical_workers.get_all()] == [busy.id]
    # Recently stopped workers are kept.
    db.physical_workers.mark_stopped(live.id)
    assert db.collect_garbage(timedelta(hours=1))["physical_workers"] == []


def test_gc_repairs_references_to_records_removed_by_hand(
    redis_db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    lw = redis_db.logical_workers.create("w", ["q"])
    pw = redis_db.physical_workers.create("w@n", pid=1, logical_worker_id=lw.id)
    run = redis_db.runs.create("s", "/ws", ["q"])
    other = redis_db.runs.create("s", "/ws2", ["q"])
    tag = "{" + prefix + "}"
    raw_redis.delete(f"{tag}:run:{other.id[1:]}")  # as if an operator deleted a key by hand
    raw_redis.delete(f"{tag}:lw:{lw.id}")
    raw_redis.srem(f"{tag}:lw:ids", lw.id)
    report = redis_db.collect_garbage(timedelta(days=1))
    assert len(report["dangling"]) == 4, report
    assert redis_db.runs.get(run.id).workers == ()
    assert redis_db.studies.get("s").runs == (run.id,)
    assert redis_db.physical_workers.get(pw.id).logical_worker_id is None
    assert [r.id for r in redis_db.runs.get_all()] == [run.id]
    assert [r.id for r in redis_db.runs.get_all({"queues": "q"})] == [run.id]
    assert redis_db.collect_garbage(timedelta(days=1))["dangling"] == []


@pytest.mark.parametrize(
    "change",
    [
        {"id": "not-an-id"},
        {"id": 5},
        {"workspace": ""},
    ],
)
def test_import_refuses_bad_run_fields_and_writes_nothing(
    db: TrackingDatabase, change: dict[str, object]
) -> None:
    run_id = _run_with_history(db)
    document = db.export_run(run_id)
    db.delete_everything()
    document["run"] = {**document["run"], **change}
    with pytest.raises(InvalidRecordError):
        db.import_run(document)
    assert db.info()["counts"] == {"study": 0, "run": 0, "logical_worker": 0, "physical_worker": 0}


def test_import_refuses_a_study_that_is_not_an_object(db: TrackingDatabase) -> None:
    document = db.export_run(_run_with_history(db))
    db.delete_everything()
    with pytest.raises(InvalidRecordError, match="study"):
        db.import_run({**document, "study": "sweep"})
