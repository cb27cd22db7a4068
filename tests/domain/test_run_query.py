"""``RunManager.query`` (``RunQuery``), ``count_by_status`` and ``delete_many``, on each store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from merlin_tracking import InvalidFilterError, Run, RunStatus, TrackingDatabase
from merlin_tracking.managers import InvalidPeriodError, RunQuery
from merlin_tracking.managers import run_query as run_query_module


def ids(runs: Sequence[Run]) -> list[str]:
    return [run.id for run in runs]


@pytest.fixture
def ledger(db: TrackingDatabase) -> dict[str, Run]:
    """Five runs, oldest first: two studies, two queues, one worker, three statuses."""
    worker = db.logical_workers.create("sim", ["fast"])
    made = {
        "a": db.runs.create("sweep", "/ws/a", ["fast"]),
        "b": db.runs.create("sweep", "/ws/b", ["slow"]),
        "c": db.runs.create("other", "/ws/c", ["fast", "slow"]),
        "d": db.runs.create("other", "/ws/d", ["slow"]),
        "e": db.runs.create("sweep", "/ws/e", ["slow"]),
    }
    db.runs.update(made["b"].id, status=RunStatus.RUNNING)
    db.runs.cancel(made["d"].id)
    assert db.runs.get(made["a"].id).workers == (worker.id,)
    return {key: db.runs.get(run.id) for key, run in made.items()}


def test_query_without_criteria_is_every_run_newest_first(
    db: TrackingDatabase, ledger: dict[str, Run]
) -> None:
    newest = ids(list(ledger.values())[::-1])
    assert ids(db.runs.query()) == newest
    assert ids(db.runs.query(RunQuery())) == newest
    assert ids(db.runs.query(RunQuery(newest_first=False))) == newest[::-1]


def test_query_criteria_and_together_values_or_together(
    db: TrackingDatabase, ledger: dict[str, Run]
) -> None:
    def found(**criteria: object) -> list[str]:
        return ids(db.runs.query(RunQuery(**criteria)))  # type: ignore[arg-type]

    sweep = db.studies.get("sweep").id
    worker = db.logical_workers.get(worker_name="sim", queues=["fast"]).id
    a, b, c, d, e = (ledger[key].id for key in "abcde")
    assert found(study_id=sweep) == [e, b, a]
    assert found(statuses=("running", RunStatus.CANCELLED)) == [d, b]
    assert found(queues=("fast",)) == [c, a]
    assert found(workers=(worker,)) == [c, a]
    assert found(study_id=sweep, queues=("slow",), statuses=("INITIALIZED",)) == [e]
    # An empty tuple matches nothing (as in get_all filters); None leaves the criterion out.
    assert found(statuses=()) == []
    assert found(workers=()) == []
    assert found(statuses=None, queues=None) == [e, d, c, b, a]


def test_query_time_window_is_inclusive_in_both_orders(
    db: TrackingDatabase, ledger: dict[str, Run]
) -> None:
    b, c, d = (ledger[key] for key in "bcd")
    window = {"since": b.created_at, "until": d.created_at}
    assert ids(db.runs.query(RunQuery(**window))) == [d.id, c.id, b.id]  # type: ignore[arg-type]
    oldest_first = RunQuery(**window, newest_first=False)  # type: ignore[arg-type]
    assert ids(db.runs.query(oldest_first)) == [b.id, c.id, d.id]
    assert ids(db.runs.query(RunQuery(since=c.created_at, until=c.created_at))) == [c.id]
    later = d.created_at + timedelta(days=1)
    assert db.runs.query(RunQuery(since=later)) == []


def test_query_limit_keeps_the_first_in_the_order_asked(
    db: TrackingDatabase, ledger: dict[str, Run]
) -> None:
    a, b, c, d, e = (ledger[key].id for key in "abcde")
    assert ids(db.runs.query(RunQuery(limit=2))) == [e, d]
    assert ids(db.runs.query(RunQuery(limit=2, newest_first=False))) == [a, b]
    assert ids(db.runs.query(RunQuery(limit=2, until=ledger["c"].created_at))) == [c, b]
    assert db.runs.query(RunQuery(limit=0)) == []
    assert len(db.runs.query(RunQuery(limit=50))) == 5


def test_query_reads_page_by_page_and_stops_early(
    db: TrackingDatabase, ledger: dict[str, Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids sort by creation: a limit, or a run before ``since`` (after ``until`` oldest
    first), ends the reading without fetching the remaining pages."""
    monkeypatch.setattr(run_query_module, "PAGE", 2)
    pages: list[int] = []
    fetch_many = db.store.fetch_many

    def counting(record_type: type[Run], wanted: Sequence[str]) -> list[Run]:
        pages.append(len(wanted))
        return fetch_many(record_type, wanted)

    monkeypatch.setattr(db.store, "fetch_many", counting)
    a, b, c, d, e = (ledger[key] for key in "abcde")

    def pages_read(query: RunQuery) -> list[int]:
        pages.clear()
        db.runs.query(query)
        return list(pages)

    assert ids(db.runs.query(RunQuery())) == [e.id, d.id, c.id, b.id, a.id]
    assert pages_read(RunQuery()) == [2, 2, 1]
    assert pages_read(RunQuery(limit=2)) == [2]
    assert pages_read(RunQuery(since=d.created_at)) == [2, 2]
    assert pages_read(RunQuery(until=b.created_at, newest_first=False)) == [2, 2]
    assert ids(db.runs.query(RunQuery(since=c.created_at, limit=3))) == [e.id, d.id, c.id]
    # An offset with no time window skips ids without reading their runs.
    assert pages_read(RunQuery(offset=3, limit=2)) == [2]
    assert ids(db.runs.query(RunQuery(offset=3, limit=2))) == [b.id, a.id]


def test_query_offset_skips_matching_runs_in_the_order_asked(
    db: TrackingDatabase, ledger: dict[str, Run]
) -> None:
    b, c, d, e = (ledger[key].id for key in "bcde")
    assert ids(db.runs.query(RunQuery(offset=1, limit=2))) == [d, c]
    assert ids(db.runs.query(RunQuery(offset=1, newest_first=False))) == [b, c, d, e]
    window = RunQuery(offset=1, since=ledger["b"].created_at, until=ledger["d"].created_at)
    assert ids(db.runs.query(window)) == [c, b]
    assert db.runs.query(RunQuery(offset=5)) == []
    with pytest.raises(InvalidFilterError, match="offset"):
        RunQuery(offset=-1)


def test_query_validation_errors_are_invalid_filter_errors(db: TrackingDatabase) -> None:
    run = db.runs.create("s", "/ws", ["q"])
    later = run.created_at + timedelta(seconds=1)
    with pytest.raises(InvalidPeriodError) as caught:
        RunQuery(since=later, until=run.created_at)
    assert isinstance(caught.value, InvalidFilterError)
    assert (caught.value.since, caught.value.until) == (later, run.created_at)
    assert str(caught.value).startswith("since (")
    with pytest.raises(InvalidFilterError, match="limit"):
        RunQuery(limit=-1)
    with pytest.raises(InvalidFilterError, match="RUNNING"):
        db.runs.query(RunQuery(statuses=("sleeping",)))
    with pytest.raises(InvalidFilterError, match="not valid Unicode"):
        db.runs.query(RunQuery(queues=("\udcff",)))


def test_count_by_status_lists_every_status(db: TrackingDatabase, ledger: dict[str, Run]) -> None:
    counts = db.runs.count_by_status()
    assert list(counts) == [status.value for status in RunStatus]
    assert counts == {
        "INITIALIZED": 3,
        "QUEUED": 0,
        "RUNNING": 1,
        "STALLED": 0,
        "COMPLETED": 0,
        "CANCELLED": 1,
        "FAILED": 0,
    }
    db.runs.delete_all()
    assert set(db.runs.count_by_status().values()) == {0}


def test_delete_many_cleans_up_like_delete_and_skips_unknown_ids(
    db: TrackingDatabase, ledger: dict[str, Run]
) -> None:
    a, c, e = (ledger[key].id for key in "ace")
    assert db.runs.delete_many([a, c, "r999999", "", "\udcff"]) == 2
    assert db.runs.get_many([a, c, e]) == [ledger["e"]]
    assert db.studies.get("sweep").runs == (ledger["b"].id, e)
    assert db.logical_workers.get_all()[0].runs == ()
    assert db.runs.delete_many([]) == 0
    assert db.runs.delete_many(iter([e])) == 1
