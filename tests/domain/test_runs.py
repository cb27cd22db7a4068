"""Run manager behaviour against a real Redis."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from merlin_tracking import (
    DuplicateEntityError,
    InvalidFilterError,
    InvalidRecordError,
    Run,
    RunNotFoundError,
    RunStatus,
    TrackingDatabase,
)


def test_create_makes_the_study_and_links_both_ways(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/1", ["sim", "post"])
    study = db.studies.get("sweep")
    assert run.study_id == study.id
    assert study.runs == (run.id,)
    assert run.status is RunStatus.INITIALIZED
    assert run.queues == ("sim", "post")
    assert run.created_at.tzinfo is not None
    assert run.created_at == run.updated_at


def test_a_refused_run_creates_no_study(db: TrackingDatabase) -> None:
    db.runs.create("sweep", "/ws/1", ["q"])
    with pytest.raises(DuplicateEntityError):
        db.runs.create("another study", "/ws/1", ["q"])
    assert [study.name for study in db.studies.get_all()] == ["sweep"]


def test_runs_of_one_new_study_created_at_once_share_it(db: TrackingDatabase) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda i: db.runs.create("new", f"/ws/{i}", ["q"]), range(40)))
    (study,) = db.studies.get_all()
    assert {run.study_id for run in runs} == {study.id}
    assert sorted(study.runs) == sorted(run.id for run in runs)


def test_known_kwargs_are_fields_unknown_go_to_additional_data(db: TrackingDatabase) -> None:
    run = db.runs.create(
        "sweep",
        "/ws/1",
        ["q"],
        parameters={"lr": 0.1, "layers": [1, 2]},
        samples=[[1.5, 2.5]],
        parent="/ws/0",
        user="alice",
        priority=3,
    )
    loaded = db.runs.get(run.id)
    assert loaded == run
    assert loaded.parameters == {"lr": 0.1, "layers": [1, 2]}
    assert loaded.samples == [[1.5, 2.5]]
    assert loaded.parent == "/ws/0"
    assert loaded.child is None
    assert loaded.additional_data == {"user": "alice", "priority": 3}
    assert loaded.get_additional_data() == {"user": "alice", "priority": 3}


def test_managed_fields_cannot_be_passed(db: TrackingDatabase) -> None:
    with pytest.raises(InvalidRecordError, match="workers"):
        db.runs.create("sweep", "/ws/1", ["q"], workers=["x"])
    assert db.runs.count() == 0


def test_get_by_id_or_workspace(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/scratch/ws 1/*?[x]:y\nz/ü", ["q"])
    assert db.runs.get(run.id) == run
    assert db.runs.get("/scratch/ws 1/*?[x]:y\nz/ü") == run
    with pytest.raises(RunNotFoundError, match="no run matches"):
        db.runs.get("/scratch/ws 1/*")


def test_workspace_is_unique(db: TrackingDatabase) -> None:
    first = db.runs.create("sweep", "/ws/1", ["q"])
    with pytest.raises(DuplicateEntityError) as caught:
        db.runs.create("other", "/ws/1", ["q"])
    assert caught.value.existing_id == first.id
    # The failed create left nothing behind, not even its study.
    assert db.runs.count() == 1
    assert db.studies.find("other") is None


def test_reference_getters(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("w", ["q"])
    run = db.runs.create("sweep", "/ws/1", ["q"])
    assert run.get_id() == run.id
    assert run.get_study_id() == run.study_id
    assert run.get_workspace() == "/ws/1"
    assert run.get_queues() == ["q"]
    assert run.get_workers() == [lw.id]
    assert run.get_run_status() is RunStatus.INITIALIZED


def test_create_attaches_existing_workers_of_its_queues(db: TrackingDatabase) -> None:
    sim = db.logical_workers.create("simworker", ["sim"])
    post = db.logical_workers.create("postworker", ["post", "other"])
    db.logical_workers.create("unrelated", ["elsewhere"])
    run = db.runs.create("sweep", "/ws/1", ["sim", "post"])
    assert set(run.workers) == {sim.id, post.id}
    assert db.runs.get(run.id).workers == run.workers
    assert db.logical_workers.get(sim.id).runs == (run.id,)
    assert db.logical_workers.get(post.id).runs == (run.id,)


def test_add_queues_attaches_their_workers(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/1", ["sim"])
    post = db.logical_workers.create("postworker", ["post"])
    updated = db.runs.add_queues(run.id, ["post", "sim"])
    assert updated.queues == ("post", "sim")
    assert updated.workers == (post.id,)
    assert db.runs.get_all({"queues": "post"}) == [updated]


def test_attach_and_detach_worker(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/1", ["q"])
    lw = db.logical_workers.create("w", ["other"])
    assert db.runs.attach_worker(run.id, lw.id) is True
    assert db.runs.attach_worker("/ws/1", lw.id) is False
    assert db.runs.get(run.id).workers == (lw.id,)
    assert db.logical_workers.get(lw.id).runs == (run.id,)
    assert db.runs.detach_worker(run.id, lw.id) is True
    assert db.runs.get(run.id).workers == ()
    assert db.logical_workers.get(lw.id).runs == ()


def test_update_sets_fields_and_moves_status_index(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/1", ["q"])
    updated = db.runs.update(run.id, status="running", child="/ws/2")
    assert updated.status is RunStatus.RUNNING
    assert updated.child == "/ws/2"
    assert updated.updated_at > run.updated_at
    assert db.runs.get_all({"status": "RUNNING"}) == [updated]
    assert db.runs.get_all({"status": "INITIALIZED"}) == []


def test_update_refuses_unknown_fields_and_bad_status(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/1", ["q"])
    with pytest.raises(InvalidRecordError, match="workspace"):
        db.runs.update(run.id, workspace="/elsewhere")
    with pytest.raises(InvalidRecordError, match="valid values"):
        db.runs.update(run.id, status="sleeping")
    assert db.runs.get(run.id) == run


def test_delete_cleans_study_and_workers(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("w", ["q"])
    run = db.runs.create("sweep", "/ws/1", ["q"])
    db.runs.delete("/ws/1")
    with pytest.raises(RunNotFoundError):
        db.runs.get(run.id)
    assert db.studies.get("sweep").runs == ()
    assert db.logical_workers.get(lw.id).runs == ()
    assert db.runs.get_all({"queues": "q"}) == []
    # The workspace can be used again.
    assert db.runs.create("sweep", "/ws/1", ["q"]).workspace == "/ws/1"


def test_delete_unknown_run_raises(db: TrackingDatabase) -> None:
    with pytest.raises(RunNotFoundError):
        db.runs.delete("nothing-here")


def test_delete_all(db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("w", ["q"])
    for index in range(30):
        db.runs.create(f"s{index % 3}", f"/ws/{index}", ["q"])
    assert db.runs.delete_all() == 30
    assert db.runs.get_all() == []
    assert all(study.runs == () for study in db.studies.get_all())
    assert db.logical_workers.get(lw.id).runs == ()


def test_get_all_is_in_creation_order_with_limit(db: TrackingDatabase) -> None:
    runs = [db.runs.create("sweep", f"/ws/{index}", ["q"]) for index in range(12)]
    assert db.runs.get_all() == runs
    assert db.runs.get_all(limit=5) == runs[:5]
    assert db.runs.get_all({"queues": "q"}, limit=0) == []


def test_records_are_immutable(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/1", ["q"])
    with pytest.raises(AttributeError):
        run.status = RunStatus.RUNNING  # type: ignore[misc]


def test_timestamps_are_aware_utc(db: TrackingDatabase) -> None:
    before = datetime.now(timezone.utc)
    run = db.runs.create("sweep", "/ws/1", ["q"])
    after = datetime.now(timezone.utc)
    assert before <= run.created_at <= after
    assert db.runs.get(run.id).created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("queues", "message"),
    [("sim", "list of strings"), ([1], "string"), (None, "list of strings")],
)
def test_bad_queues_are_refused(db: TrackingDatabase, queues: object, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        db.runs.create("sweep", "/ws/1", queues)  # type: ignore[arg-type]
    assert db.runs.count() == 0


def test_run_record_json_form(db: TrackingDatabase) -> None:
    run = db.runs.create("sweep", "/ws/1", ["q"], parameters={"a": 1})
    data = run.to_dict()
    assert data["status"] == "INITIALIZED"
    assert data["queues"] == ["q"]
    assert data["created_at"] == run.created_at.isoformat()
    assert Run.from_fields(run.id, run.to_fields()) == run


@pytest.mark.parametrize("workspace", ["status:RUNNING", "workspace", "recent", "queue:q"])
def test_workspaces_named_like_index_keys(db: TrackingDatabase, workspace: str) -> None:
    run = db.runs.create("sweep", workspace, ["q"])
    assert db.runs.get(workspace) == run
    db.runs.delete(workspace)
    with pytest.raises(RunNotFoundError):
        db.runs.get(workspace)


def test_lookups_of_index_key_names_are_not_found(db: TrackingDatabase) -> None:
    db.runs.create("sweep", "/ws", ["q"])
    db.logical_workers.create("w", ["q"])
    from merlin_tracking import StudyNotFoundError, WorkerNotFoundError

    with pytest.raises(StudyNotFoundError):
        db.studies.get("ids")
    with pytest.raises(WorkerNotFoundError):
        db.logical_workers.get("ids")
    with pytest.raises(RunNotFoundError):
        db.runs.get("status:INITIALIZED")


def test_run_ids_come_from_the_store_sequence_in_creation_order(db: TrackingDatabase) -> None:
    runs = [db.runs.create("s", f"/ws/{index}", ["q"]) for index in range(12)]
    assert [run.id for run in runs] == [f"r{index}" for index in range(1, 13)]
    assert db.runs.get_all() == runs  # r10 after r9: numeric, not text, order
    db.runs.delete("r12")
    assert db.runs.create("s", "/ws/again", ["q"]).id == "r13"  # ids are never reused


def test_iter_all_streams_what_get_all_returns_a_page_at_a_time(
    db: TrackingDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from merlin_tracking.stores import base

    for index in range(25):
        db.runs.create("sweep" if index % 2 else "other", f"/ws/{index}", ["q"])
    monkeypatch.setattr(base, "QUERY_PAGE", 10)
    pages: list[int] = []
    fetch_many = db.store.fetch_many

    def counting(record_type: type[Run], wanted: list[str]) -> list[Run]:
        pages.append(len(wanted))
        return fetch_many(record_type, wanted)

    monkeypatch.setattr(db.store, "fetch_many", counting)
    streamed = db.runs.iter_all()
    assert pages == []  # nothing read before the first record is asked for
    first = next(streamed)
    assert pages == [10]
    assert [first, *streamed] == db.runs.get_all()
    assert pages[:3] == [10, 10, 5]
    study = db.studies.get("sweep").id
    assert list(db.runs.iter_all({"study_id": study}, limit=5)) == db.runs.get_all(
        {"study_id": study}, limit=5
    )
    with pytest.raises(InvalidFilterError, match="colour"):
        db.runs.iter_all({"colour": "red"})
