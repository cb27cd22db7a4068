"""Study manager behaviour against a real Redis."""

from __future__ import annotations

import pytest

from merlin_tracking import (
    InvalidRecordError,
    RunNotFoundError,
    StudyNotFoundError,
    TrackingDatabase,
)


def test_create_is_idempotent_and_returns_the_same_record(db: TrackingDatabase) -> None:
    first = db.studies.create("sweep")
    second = db.studies.create("sweep")
    assert first == second
    assert db.studies.count() == 1


def test_get_by_id_and_by_name(db: TrackingDatabase) -> None:
    study = db.studies.create("sweep")
    assert db.studies.get(study.id) == study
    assert db.studies.get("sweep") == study
    with pytest.raises(StudyNotFoundError, match="nope"):
        db.studies.get("nope")


def test_numeric_looking_name_stays_a_string(db: TrackingDatabase) -> None:
    study = db.studies.create("2024")
    loaded = db.studies.get("2024")
    assert loaded.name == "2024"
    assert isinstance(loaded.name, str)
    assert loaded.id == study.id


def test_study_lists_its_runs(db: TrackingDatabase) -> None:
    run_a = db.runs.create("sweep", "/ws/a", ["q"])
    run_b = db.runs.create("sweep", "/ws/b", ["q"])
    study = db.studies.get("sweep")
    assert set(study.runs) == {run_a.id, run_b.id}
    assert study.get_runs() == sorted([run_a.id, run_b.id])


def test_delete_removes_runs_by_default(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/a", ["q"])
    db.studies.delete("sweep")
    with pytest.raises(StudyNotFoundError):
        db.studies.get("sweep")
    with pytest.raises(RunNotFoundError):
        db.runs.get(run.id)
    with pytest.raises(RunNotFoundError):
        db.runs.get("/ws/a")


def test_delete_keeping_runs_detaches_them(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/a", ["q"])
    db.studies.delete("sweep", remove_associated_runs=False)
    kept = db.runs.get(run.id)
    assert kept.study_id is None
    # The name is free again and a new study with it starts empty.
    again = db.studies.create("sweep")
    assert again.runs == ()


def test_delete_study_with_more_runs_than_one_batch(db: TrackingDatabase) -> None:
    from merlin_tracking.stores.redis import store as redis_store

    for index in range(redis_store.DELETE_BATCH + 20):
        db.runs.create("big", f"/ws/{index}", ["q"])
    db.studies.delete("big")
    assert db.runs.count() == 0
    assert db.studies.count() == 0


def test_delete_unknown_study_raises(db: TrackingDatabase) -> None:
    with pytest.raises(StudyNotFoundError):
        db.studies.delete("ghost")


def test_delete_all(db: TrackingDatabase) -> None:
    db.runs.create("a", "/ws/1", ["q"])
    db.runs.create("b", "/ws/2", ["q"])
    assert db.studies.delete_all() == 2
    assert db.studies.get_all() == []
    assert db.runs.get_all() == []


@pytest.mark.parametrize("bad", ["", None, 42, ["x"]])
def test_bad_names_are_refused(db: TrackingDatabase, bad: object) -> None:
    with pytest.raises(InvalidRecordError, match="study name"):
        db.studies.create(bad)  # type: ignore[arg-type]
    assert db.studies.count() == 0


def test_filter_by_name(db: TrackingDatabase) -> None:
    a = db.studies.create("a")
    db.studies.create("b")
    c = db.studies.create("c")
    assert db.studies.get_all({"name": "a"}) == [a]
    assert db.studies.get_all({"name": ["a", "c", "zzz"]}) == [a, c]
    assert db.studies.get_all({"name": "zzz"}) == []
