"""Lookups every manager has: ``find`` (None when missing) and ``get_many`` (in order, missing
skipped), on each store; and ``TrackingDatabase.run_details``."""

from __future__ import annotations

import pytest

from merlin_tracking import InvalidRecordError, RunNotFoundError, TrackingDatabase
from merlin_tracking.database import RunDetails


def test_find_by_id_or_unique_key_else_none(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("sim", ["q"])
    run = db.runs.create("sweep", "/ws/1", ["q"])
    pw = db.physical_workers.create("sim@host", pid=1, logical_worker_id=lw.id)
    study = db.studies.get("sweep")
    assert db.runs.find(run.id) == db.runs.find("/ws/1") == db.runs.get(run.id)
    assert db.studies.find(study.id) == db.studies.find("sweep") == study
    assert db.logical_workers.find(lw.id) == db.logical_workers.get(lw.id)
    assert db.physical_workers.find(pw.id) == db.physical_workers.find("sim@host") == pw
    # Names only: a logical worker is found by id, never by name.
    assert db.logical_workers.find("sim") is None
    for missing in ("r999999", "/ws/2", "nobody", None, "", "\udcff"):
        assert db.runs.find(missing) is None
        assert db.studies.find(missing) is None
        assert db.logical_workers.find(missing) is None
        assert db.physical_workers.find(missing) is None


def test_get_still_raises_where_find_answers_none(db: TrackingDatabase) -> None:
    with pytest.raises(RunNotFoundError):
        db.runs.get("/ws/none")
    with pytest.raises(RunNotFoundError):
        db.runs.get("\udcff")
    with pytest.raises(InvalidRecordError, match="non-empty string"):
        db.runs.get("")


def test_get_many_keeps_the_order_given_and_skips_missing(db: TrackingDatabase) -> None:
    runs = [db.runs.create("sweep", f"/ws/{i}", ["q"]) for i in range(3)]
    first, second, third = (run.id for run in runs)
    assert [r.id for r in db.runs.get_many([third, "r999999", first, "", "\udcff"])] == [
        third,
        first,
    ]
    assert db.runs.get_many(iter([second])) == [db.runs.get(second)]
    assert db.runs.get_many([]) == []
    study = db.studies.get("sweep")
    assert db.studies.get_many(["gone", study.id]) == [study]
    assert [r.id for r in db.runs.get_many(study.runs)] == [first, second, third]


def test_get_many_of_workers_follows_their_references(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("sim", ["q"])
    pws = [db.physical_workers.create(f"sim@{h}", pid=1, logical_worker_id=lw.id) for h in "ab"]
    lw = db.logical_workers.get(lw.id)
    assert db.physical_workers.get_many(lw.physical_workers) == pws
    assert db.physical_workers.get_many([pws[1].id, pws[0].id]) == pws[::-1]
    assert db.logical_workers.get_many([pws[0].logical_worker_id or "", lw.id]) == [lw, lw]


def test_run_details_bundle_the_run_and_its_references(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("sim", ["q"])
    idle = db.logical_workers.create("post", ["q"])
    pw = db.physical_workers.create("sim@host", pid=1, logical_worker_id=lw.id)
    run = db.runs.create("sweep", "/ws/1", ["q"])
    details = db.run_details("/ws/1")
    assert isinstance(details, RunDetails)
    assert details.run == db.runs.get(run.id)
    assert details.study == db.studies.get("sweep")
    assert {w.id for w in details.logical_workers} == {lw.id, idle.id}
    assert [w.id for w in details.logical_workers] == list(details.run.workers)
    assert details.physical_workers == (pw,)
    with pytest.raises(RunNotFoundError):
        db.run_details("/ws/none")


def test_run_details_of_a_detached_run_and_export_agree(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/1", ["q"])
    db.studies.delete("sweep", remove_associated_runs=False)
    details = db.run_details(run.id)
    assert details.study is None
    assert details.logical_workers == ()
    assert details.physical_workers == ()
    document = db.export_run(run.id)
    assert document["run"] == details.run.to_dict()
    assert document["study"] is None
    assert document["logical_workers"] == document["physical_workers"] == []


def test_url_is_the_stores_masked_url(db: TrackingDatabase) -> None:
    assert db.url == db.store.url == db.info()["url"]
