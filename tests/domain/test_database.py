"""The TrackingDatabase facade: generic API and info()."""

from __future__ import annotations

import pytest
import redis

from merlin_tracking import (
    InvalidRecordError,
    LogicalWorker,
    Run,
    Study,
    TrackingDatabase,
    __version__,
)


def test_generic_api_by_entity_type(db: TrackingDatabase) -> None:
    run = db.create("run", "sweep", "/ws/1", ["q"])
    assert isinstance(run, Run)
    assert db.get("run", "/ws/1") == run
    assert isinstance(db.get("study", "sweep"), Study)
    lw = db.create("logical_worker", "w", ["q"])
    assert isinstance(lw, LogicalWorker)
    assert db.get_all("logical_worker") == [lw]
    db.create("physical_worker", "w@n", pid=3)
    assert [pw.name for pw in db.get_all("physical_worker")] == ["w@n"]  # type: ignore[attr-defined]
    db.delete("run", run.id)
    assert db.get_all("run") == []
    assert db.delete_all("study") == 1


def test_unknown_entity_type(db: TrackingDatabase) -> None:
    with pytest.raises(InvalidRecordError, match="logical_worker, physical_worker, run, study"):
        db.get_all("job")


def test_info_counts_and_recent(redis_db: TrackingDatabase) -> None:
    redis_db.logical_workers.create("w", ["q"])
    runs = [redis_db.runs.create("s", f"/ws/{i}", ["q"]) for i in range(7)]
    redis_db.physical_workers.create("w@n", pid=1)
    info = redis_db.info(recent=3)
    assert info["version"] == __version__
    assert info["backend"] == "redis"
    assert info["counts"] == {"study": 1, "run": 7, "logical_worker": 1, "physical_worker": 1}
    assert [r["id"] for r in info["recent_runs"]] == [r.id for r in reversed(runs[-3:])]
    assert info["server"]["server_version"]
    redis_db.runs.delete(runs[-1].id)
    assert info["recent_runs"][0]["id"] == runs[-1].id
    assert redis_db.info(recent=1)["recent_runs"][0]["id"] == runs[-2].id


def test_delete_everything_empties_the_prefix(
    redis_db: TrackingDatabase, raw_redis: redis.Redis, prefix: str
) -> None:
    lw = redis_db.logical_workers.create("w", ["q"])
    redis_db.runs.create("s", "/ws/1", ["q"])
    redis_db.physical_workers.create("w@n", pid=1, logical_worker_id=lw.id)
    redis_db.delete_everything()
    assert redis_db.info()["counts"] == {
        "study": 0,
        "run": 0,
        "logical_worker": 0,
        "physical_worker": 0,
    }
    # Only the run id sequence is kept, so run ids are never reused within a ledger.
    left = [k.decode() for k in raw_redis.scan_iter(match="{" + prefix + "}*")]
    assert left == ["{" + prefix + "}:run:seq"]
