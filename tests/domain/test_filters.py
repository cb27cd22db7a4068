"""Filter semantics, shared by every manager: validation, AND/OR, no mutation."""

from __future__ import annotations

import copy

import pytest

from merlin_tracking import InvalidFilterError, RunStatus, TrackingDatabase


@pytest.fixture
def populated(db: TrackingDatabase) -> dict[str, object]:
    sim = db.logical_workers.create("sim", ["sim"])
    post = db.logical_workers.create("post", ["post"])
    r1 = db.runs.create("alpha", "/ws/1", ["sim"])
    r2 = db.runs.create("alpha", "/ws/2", ["sim", "post"])
    r3 = db.runs.create("beta", "/ws/3", ["post"])
    r2 = db.runs.update(r2.id, status="RUNNING")
    r3 = db.runs.update(r3.id, status="COMPLETED")
    alpha = db.studies.get("alpha")
    return {"sim": sim, "post": post, "r1": r1, "r2": r2, "r3": r3, "alpha": alpha}


def ids(records: list[object]) -> list[str]:
    return [r.id for r in records]  # type: ignore[attr-defined]


def test_each_run_filter(db: TrackingDatabase, populated: dict[str, object]) -> None:
    r1, r2, r3 = populated["r1"], populated["r2"], populated["r3"]
    alpha, sim, post = populated["alpha"], populated["sim"], populated["post"]
    assert db.runs.get_all({"study_id": alpha.id}) == [r1, r2]  # type: ignore[attr-defined]
    assert db.runs.get_all({"status": "running"}) == [r2]
    assert db.runs.get_all({"status": RunStatus.COMPLETED}) == [r3]
    assert db.runs.get_all({"queues": "post"}) == [r2, r3]
    assert db.runs.get_all({"workers": sim.id}) == [r1, r2]  # type: ignore[attr-defined]
    assert db.runs.get_all({"workers": [post.id]}) == [r2, r3]  # type: ignore[attr-defined]


def test_keys_and_lists_or(db: TrackingDatabase, populated: dict[str, object]) -> None:
    r1, r2, r3 = populated["r1"], populated["r2"], populated["r3"]
    alpha = populated["alpha"]
    assert db.runs.get_all({"status": ["initialized", "COMPLETED"]}) == [r1, r3]
    both = {"study_id": alpha.id, "queues": ["post", "nope"]}  # type: ignore[attr-defined]
    assert db.runs.get_all(both) == [r2]
    assert db.runs.get_all({"study_id": alpha.id, "status": "completed"}) == []  # type: ignore[attr-defined]
    assert db.runs.get_all({"queues": []}) == []
    assert db.runs.get_all({}) == [r1, r2, r3]
    assert db.runs.get_all(None) == [r1, r2, r3]


def test_filters_are_not_mutated(db: TrackingDatabase, populated: dict[str, object]) -> None:
    filters = {"status": ["running"], "queues": ("sim", "post")}
    before = copy.deepcopy(filters)
    db.runs.get_all(filters)
    assert filters == before


@pytest.mark.parametrize(
    ("entity", "filters", "message"),
    [
        ("run", {"colour": "red"}, "valid filters: queues, status, study_id, workers"),
        ("run", {"status": "sleeping"}, "valid values: CANCELLED, COMPLETED, FAILED"),
        ("run", {"status": ["running", "nap"]}, "'nap' is not a valid RunStatus"),
        ("run", {"queues": 3}, "takes a string or a list of strings"),
        ("run", {"queues": ["ok", 3]}, "takes strings"),
        ("study", {"status": "running"}, "valid filters: name"),
        ("logical_worker", {"host": "x"}, "valid filters: name, queues"),
        ("physical_worker", {"status": "dead"}, "REBOOTING, RUNNING, STALLED, STOPPED"),
        ("physical_worker", {"workspace": "x"}, "host, job_id, logical_worker_id, name, status"),
    ],
)
def test_bad_filters_raise_naming_valid_choices(
    db: TrackingDatabase, entity: str, filters: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        db.get_all(entity, filters)
    assert message in str(caught.value)


def test_bad_limit(db: TrackingDatabase) -> None:
    with pytest.raises(InvalidFilterError, match="limit"):
        db.runs.get_all(limit=-1)
    with pytest.raises(InvalidFilterError, match="mapping"):
        db.runs.get_all(["status"])  # type: ignore[arg-type]


def test_physical_filters(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("w", ["q"])
    a = db.physical_workers.create("w@a", host="a", pid=1, logical_worker_id=lw.id)
    b = db.physical_workers.create("w@b", host="b", pid=2)
    db.physical_workers.update(b.id, status="stopped")
    b = db.physical_workers.get(b.id)
    assert db.physical_workers.get_all({"host": ["a", "b"]}) == [a, b]
    assert db.physical_workers.get_all({"status": "STOPPED"}) == [b]
    assert db.physical_workers.get_all({"name": ["w@b", "w@zz"]}) == [b]
    assert db.physical_workers.get_all({"name": "w@a", "status": "running"}) == [a]
    assert db.physical_workers.get_all({"name": "w@a", "status": "stopped"}) == []
    assert db.physical_workers.get_all({"logical_worker_id": lw.id}) == [a]
