"""``runs list/show/cancel/delete`` against a real Redis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from merlin_tracking import RunStatus, TrackingDatabase, WorkerStatus
from merlin_tracking.cli import options
from tests.support.cli import Cli, fails, make_run, ok, widest_line

LONG_WS = "/scratch/users/someone/" + "very-long-directory-name/" * 8 + "sweep_20240501-123456"


@pytest.fixture
def cli(redis_url: str, prefix: str) -> Cli:
    return Cli(redis_url, prefix)


@pytest.fixture
def ledger(db: TrackingDatabase) -> dict[str, str]:
    """Three runs of two studies, one worker serving the ``sim`` queue."""
    lw = db.logical_workers.create("sim", ["sim"])
    db.physical_workers.create("sim@n1", pid=10, host="n1", logical_worker_id=lw.id, stale_after=60)
    first = make_run(db, "sweep", "/ws/a", ["sim"], queued=4, started=3, succeeded=2)
    second = make_run(db, "sweep", LONG_WS, ["post"], queued=2, started=1, failed=1)
    third = make_run(db, "other", "/ws/c", ["post"])
    return {"a": first.id, "b": second.id, "c": third.id, "lw": lw.id}


def test_list_newest_first_as_table_and_json(cli: Cli, ledger: dict[str, str]) -> None:
    out = ok(cli("runs", "list"))
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PROGRESS", "STUDY", "CREATED", "WORKSPACE"]
    assert [line.split()[0] for line in lines[1:4]] == [ledger["c"], ledger["b"], ledger["a"]]
    assert "2/4" in lines[3] and "RUNNING" in lines[3]
    assert lines[-1] == "3 runs"
    assert widest_line(out) <= 80
    assert "…" in lines[2]  # the long workspace is elided, keeping its end
    assert lines[2].endswith("123456")

    document = cli.json("runs", "list")
    assert document["count"] == 3
    assert [run["id"] for run in document["runs"]] == [ledger["c"], ledger["b"], ledger["a"]]
    run_a = document["runs"][2]
    assert run_a["workspace"] == "/ws/a" and run_a["study_name"] == "sweep"
    assert run_a["counters"] == {
        "queued": 4,
        "started": 3,
        "succeeded": 2,
        "failed": 0,
        "retried": 0,
        "revoked": 0,
        "lost": 0,
    }
    assert run_a["tasks_finished"] == 2 and run_a["progress"] == 0.5 and run_a["active"] is True
    assert datetime.fromisoformat(run_a["created_at"]).tzinfo is not None
    assert document["runs"][1]["workspace"] == LONG_WS  # JSON is never elided


def test_list_filters(cli: Cli, ledger: dict[str, str]) -> None:
    def ids(*args: str) -> list[str]:
        return [run["id"] for run in cli.json("runs", "list", *args)["runs"]]

    assert ids("--study", "sweep") == [ledger["b"], ledger["a"]]
    study_id = cli.json("studies", "show", "other")["study"]["id"]
    assert ids("--study", study_id) == [ledger["c"]]
    assert ids("--status", "running") == [ledger["a"]]
    assert ids("--status", "failed", "--status", "INITIALIZED") == [ledger["c"], ledger["b"]]
    assert ids("--queue", "post") == [ledger["c"], ledger["b"]]
    assert ids("--queue", "post", "--status", "failed") == [ledger["b"]]
    assert ids("--worker", "sim") == [ledger["a"]]  # logical worker name
    assert ids("--worker", ledger["lw"]) == [ledger["a"]]  # logical worker id
    assert ids("--worker", "sim@n1") == [ledger["a"]]  # physical worker node name
    assert ids("--limit", "2") == [ledger["c"], ledger["b"]]
    assert ids("--limit", "0") == []
    assert ids("--since", "1h") == [ledger["c"], ledger["b"], ledger["a"]]
    assert ids("--until", "1h") == []
    future = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids("--since", future) == []
    assert len(ids("--until", future)) == 3
    assert ids("--since", "2000-01-01", "--until", "2100-01-01", "--study", "other") == [
        ledger["c"]
    ]


def test_list_with_nothing_matching_is_not_an_error(cli: Cli, ledger: dict[str, str]) -> None:
    assert ok(cli("runs", "list", "--status", "cancelled")) == "No runs match.\n"
    assert cli.json("runs", "list", "--queue", "nope") == {"count": 0, "runs": []}


def test_list_errors(cli: Cli, ledger: dict[str, str]) -> None:
    fails(cli("runs", "list", "--status", "bogus"), 2, "'bogus' is not a valid RunStatus")
    fails(cli("runs", "list", "--since", "2x"), 2, "'2x' is neither an ISO time")
    fails(cli("runs", "list", "--since", "1h", "--until", "2h"), 2, "is after --until")
    fails(cli("runs", "list", "--limit", "-1"), 2, "--limit")
    fails(cli("runs", "list", "--study", "nope"), 1, "no study matches 'nope'")
    fails(cli("runs", "list", "--worker", "nobody"), 1, "no worker matches 'nobody'")


def test_show_by_id_and_workspace(cli: Cli, db: TrackingDatabase, ledger: dict[str, str]) -> None:
    db.physical_workers.create("sim@n2", pid=11, host="n2", logical_worker_id=ledger["lw"])
    db.physical_workers.mark_stopped("sim@n2")
    out = ok(cli("runs", "show", "/ws/a"))
    assert ledger["a"] in out and "sweep" in out
    assert "2/4 tasks finished (50%)" in out
    assert "queued 4, started 3, succeeded 2, failed 0, retried 0, revoked 0" in out
    rows = {line.split()[2]: line.split() for line in out.splitlines() if "sim@" in line}
    assert rows["sim@n1"][3:5] == ["yes", "RUNNING"]
    assert rows["sim@n2"][3:5] == ["no", "STOPPED"]
    assert widest_line(out) <= 80

    document = cli.json("runs", "show", ledger["a"])
    assert list(document) == [
        "run",
        "study",
        "logical_workers",
        "physical_workers",
        "failed_tasks",
        "lost_tasks",
        "stalled_reason",
    ]
    assert document["failed_tasks"] == document["lost_tasks"] == []
    assert document["stalled_reason"] is None
    assert document["run"]["id"] == ledger["a"]
    assert document["run"]["queues"] == ["sim"]
    assert document["study"]["name"] == "sweep"
    assert [lw["name"] for lw in document["logical_workers"]] == ["sim"]
    assert document["logical_workers"][0]["live_physical_workers"] == 1
    alive = {pw["name"]: pw["alive"] for pw in document["physical_workers"]}
    assert alive == {"sim@n1": True, "sim@n2": False}
    assert document["run"]["elapsed_seconds"] >= 0


def test_show_long_workspace_fits_80_columns(cli: Cli, ledger: dict[str, str]) -> None:
    out = ok(cli("runs", "show", LONG_WS))
    assert widest_line(out) <= 80
    assert "…" in out
    assert cli.json("runs", "show", LONG_WS)["run"]["workspace"] == LONG_WS


def test_show_not_found(cli: Cli, ledger: dict[str, str]) -> None:
    fails(cli("runs", "show", "/no/such/ws"), 1, "no run matches '/no/such/ws'")
    fails(cli("runs", "show", "/no/such/ws", "--json"), 1, "no run matches")


def test_cancel(cli: Cli, db: TrackingDatabase, ledger: dict[str, str]) -> None:
    run_a = ledger["a"]  # one task running (t2), one waiting (t3)
    fails(cli("runs", "cancel", run_a, "--no-revoke"), 2, "refusing to cancel 1 run without --yes")
    fails(cli("runs", "cancel", run_a, "--yes"), 2, "no broker to revoke", "--no-revoke")
    assert db.runs.get(run_a).status is RunStatus.RUNNING

    dry = cli.json("runs", "cancel", run_a, "--dry-run")
    counts = {"revoked": 1, "terminated": 0, "running": 1, "waiting": 0}
    assert dry == {
        "dry_run": True,
        "cancelled": [run_a],
        "already_cancelled": [],
        "revoke": True,
        "terminate": False,
        **counts,
        "runs": [{"id": run_a, **counts}],
        "answered": [],
        "errors": [],
    }
    assert db.runs.get(run_a).status is RunStatus.RUNNING

    out = ok(cli("runs", "cancel", "/ws/a", "--no-revoke", "--yes"))
    assert out.splitlines() == [
        f"Cancelled {run_a}  /ws/a",
        f"  {run_a}: not revoked (--no-revoke): 1 waiting task, 1 running task",
    ]
    assert db.runs.get(run_a).status is RunStatus.CANCELLED

    again = cli.json("runs", "cancel", run_a, ledger["c"], "--no-revoke", "--yes")
    assert (again["dry_run"], again["cancelled"], again["already_cancelled"]) == (
        False,
        [ledger["c"]],
        [run_a],
    )
    assert (again["revoke"], again["revoked"], again["waiting"], again["running"]) == (
        False,
        0,
        1,
        1,
    )
    fails(cli("runs", "cancel", run_a, "--terminate", "--no-revoke", "--yes"), 2, "--terminate")


def test_cancel_refuses_finished_runs_and_unknown_runs(
    cli: Cli, db: TrackingDatabase, ledger: dict[str, str]
) -> None:
    fails(cli("runs", "cancel", ledger["b"], ledger["c"], "--yes"), 1, "cannot cancel finished")
    assert db.runs.get(ledger["c"]).status is RunStatus.INITIALIZED  # nothing was changed
    fails(cli("runs", "cancel", "nope", ledger["c"], "--yes"), 1, "no run matches 'nope'")
    assert db.runs.get(ledger["c"]).status is RunStatus.INITIALIZED
    fails(cli("runs", "cancel"), 2, "Missing argument")


def test_cancel_asks_on_a_terminal(
    cli: Cli, db: TrackingDatabase, ledger: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(options, "is_interactive", lambda: True)
    declined = cli("runs", "cancel", ledger["a"], "--no-revoke", input="n\n")
    assert declined.exit_code == 1 and "Really cancel 1 run?" in declined.output
    revoking = cli("runs", "cancel", ledger["a"], "--broker", cli.url, input="n\n")
    assert "Really cancel 1 run and revoke 1 task?" in revoking.output
    assert db.runs.get(ledger["a"]).status is RunStatus.RUNNING
    ok(cli("runs", "cancel", ledger["a"], "--no-revoke", input="y\n"))
    assert db.runs.get(ledger["a"]).status is RunStatus.CANCELLED


def test_delete_given_runs(cli: Cli, db: TrackingDatabase, ledger: dict[str, str]) -> None:
    fails(cli("runs", "delete", ledger["a"]), 2, "refusing to delete 1 run without --yes")
    assert cli.json("runs", "delete", ledger["a"], "/ws/c", "--dry-run") == {
        "dry_run": True,
        "count": 2,
        "deleted": [ledger["a"], ledger["c"]],
    }
    assert db.runs.count() == 3
    out = ok(cli("runs", "delete", ledger["a"], "/ws/c", "--yes"))
    assert "Deleted 2 runs." in out and widest_line(out) <= 80
    assert [run.id for run in db.runs.get_all()] == [ledger["b"]]
    assert db.studies.get("sweep").runs == (ledger["b"],)
    fails(cli("runs", "delete", ledger["a"], "--yes"), 1, "no run matches")


def test_delete_all_with_filters(cli: Cli, db: TrackingDatabase, ledger: dict[str, str]) -> None:
    fails(cli("runs", "delete", "--all", "--study", "sweep"), 2, "without --yes")
    dry = cli.json("runs", "delete", "--all", "--study", "sweep", "--dry-run")
    assert dry["deleted"] == [ledger["b"], ledger["a"]] and dry["dry_run"] is True
    deleted = cli.json("runs", "delete", "--all", "--status", "failed", "--yes")
    assert deleted == {"dry_run": False, "count": 1, "deleted": [ledger["b"]]}
    fails(cli("runs", "delete", "--all", "--status", "failed", "--yes"), 1, "no runs match")
    fails(cli("runs", "delete", "--all", "--status", "nope", "--yes"), 2, "not a valid RunStatus")
    ok(cli("runs", "delete", "--all", "--yes"))
    assert db.runs.count() == 0
    fails(cli("runs", "delete", "--all", "--yes"), 1, "no runs match")


def test_delete_usage_errors(cli: Cli, ledger: dict[str, str]) -> None:
    fails(cli("runs", "delete", "--yes"), 2, "give the runs to delete")
    fails(cli("runs", "delete", ledger["a"], "--all", "--yes"), 2, "not both")
    fails(cli("runs", "delete", ledger["a"], "--status", "running", "--yes"), 2, "with --all")


def test_stalled_worker_reads_not_alive(cli: Cli, db: TrackingDatabase) -> None:
    lw = db.logical_workers.create("w", ["q"])
    db.physical_workers.create("w@h", pid=1, logical_worker_id=lw.id, stale_after=0.05)
    run = make_run(db, "s", "/ws", ["q"], queued=1)
    import time

    time.sleep(0.15)
    assert db.physical_workers.get("w@h").status is WorkerStatus.STALLED
    document = cli.json("runs", "show", run.id)
    assert document["physical_workers"][0]["status"] == "STALLED"
    assert document["physical_workers"][0]["alive"] is False


def test_selection_pages_newest_first(
    cli: Cli, db: TrackingDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from merlin_tracking.managers import run_query

    monkeypatch.setattr(run_query, "PAGE", 2)
    made = [make_run(db, "s", f"/ws/{i}").id for i in range(7)]
    newest = made[::-1]

    def ids(*args: str) -> list[str]:
        return [run["id"] for run in cli.json("runs", "list", *args)["runs"]]

    assert ids() == newest
    assert ids("--limit", "3") == newest[:3]
    assert ids("--limit", "5") == newest[:5]
    middle = db.runs.get(made[3]).created_at.isoformat()
    assert ids("--since", middle) == newest[:4]
    assert ids("--until", middle) == newest[3:]
    assert ids("--until", middle, "--limit", "2") == newest[3:5]
    assert ids("--since", middle, "--until", middle) == [made[3]]


def test_readers_complete_a_settled_run_when_no_worker_is_left(
    cli: Cli, db: TrackingDatabase
) -> None:
    """A run counted at a worker is RUNNING while it settles (``runs show`` says until when);
    once the settle time has passed, the CLI applies the completion itself."""
    import time

    from merlin_tracking.records import Run
    from merlin_tracking.records.events import COUNTED_AT_WORKER, TaskEvent, TaskEventKind

    run = db.runs.create("sweep", "/ws/settling", [])
    received = TaskEvent(run.id, "t", TaskEventKind.RECEIVED, "sim", flags=COUNTED_AT_WORKER)
    db.runs.record_events([received], settle=1.5)
    db.runs.record_events([TaskEvent(run.id, "t", TaskEventKind.RAN)])
    shown = ok(cli("runs", "show", run.id))
    assert "RUNNING" in shown and "more tasks may still arrive until" in shown
    settle_until = db.runs.get(run.id).settle_until
    assert settle_until is not None
    time.sleep(max(0.0, (settle_until - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    stored = db.store.fetch(Run, run.id)  # the store as it is, before any reader caught up
    assert stored is not None and stored.status is RunStatus.RUNNING
    listed = cli.json("runs", "list", "--status", "completed")
    assert [doc["id"] for doc in listed["runs"]] == [run.id]
    assert "Settling" not in ok(cli("runs", "show", run.id))
    assert db.runs.get(run.id).status is RunStatus.COMPLETED
