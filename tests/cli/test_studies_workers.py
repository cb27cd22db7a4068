"""``studies list/show/delete`` and ``workers list/show`` against a real Redis."""

from __future__ import annotations

import time

import pytest

from merlin_tracking import TrackingDatabase
from merlin_tracking.cli import options
from tests.support.cli import Cli, fails, make_run, ok, widest_line

LONG_NAME = "a-study-with-a-name-far-too-long-for-any-terminal-" * 3


@pytest.fixture
def cli(redis_url: str, prefix: str) -> Cli:
    return Cli(redis_url, prefix)


# ---------------------------------------------------------------------------- studies
def test_studies_list_and_show(cli: Cli, db: TrackingDatabase) -> None:
    a = make_run(db, "sweep", "/ws/a", queued=2, started=2, succeeded=2)
    b = make_run(db, "sweep", "/ws/b")
    make_run(db, LONG_NAME, "/ws/c")

    out = ok(cli("studies", "list"))
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "RUNS", "CREATED"]
    assert lines[1].split()[1].endswith("…")  # newest first, elided
    assert lines[2].split()[1:3] == ["sweep", "2"]
    assert lines[-1] == "2 studies"
    assert widest_line(out) <= 80

    document = cli.json("studies", "list")
    assert document["count"] == 2
    assert [s["name"] for s in document["studies"]] == [LONG_NAME, "sweep"]
    assert sorted(document["studies"][1]["runs"]) == sorted([a.id, b.id])
    assert cli.json("studies", "list", "--limit", "1")["count"] == 1

    shown = ok(cli("studies", "show", "sweep"))
    assert "2 runs (1 COMPLETED, 1 INITIALIZED)" in shown
    assert shown.index(b.id) < shown.index(a.id)  # newest first
    detail = cli.json("studies", "show", "sweep")
    assert detail["study"]["name"] == "sweep"
    assert [run["id"] for run in detail["runs"]] == [b.id, a.id]
    assert detail["runs"][1]["status"] == "COMPLETED"
    assert widest_line(ok(cli("studies", "show", LONG_NAME))) <= 80


def test_studies_empty_and_not_found(cli: Cli) -> None:
    assert ok(cli("studies", "list")) == "No studies.\n"
    assert cli.json("studies", "list") == {"count": 0, "studies": []}
    fails(cli("studies", "show", "nope"), 1, "no study matches 'nope'")
    fails(cli("studies", "delete", "nope", "--yes"), 1, "no study matches 'nope'")


def test_studies_delete_with_and_without_runs(cli: Cli, db: TrackingDatabase) -> None:
    a = make_run(db, "sweep", "/ws/a")
    b = make_run(db, "keep", "/ws/b")
    fails(cli("studies", "delete", "sweep"), 2, "refusing to delete 1 study and 1 run")
    dry = cli.json("studies", "delete", "sweep", "--dry-run")
    assert dry["dry_run"] is True and dry["deleted_runs"] == [a.id]
    assert db.studies.count() == 2

    study_id = db.studies.get("sweep").id
    assert cli.json("studies", "delete", "sweep", "--yes") == {
        "dry_run": False,
        "deleted": [study_id],
        "deleted_runs": [a.id],
        "detached_runs": [],
    }
    assert db.runs.count() == 1

    out = ok(cli("studies", "delete", "keep", "--keep-runs", "--yes"))
    assert "Deleted 1 study (keeping 1 run)." in out
    assert db.runs.get(b.id).study_id is None
    assert db.studies.count() == 0


def test_studies_delete_asks_on_a_terminal(
    cli: Cli, db: TrackingDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(db, "sweep", "/ws/a")
    monkeypatch.setattr(options, "is_interactive", lambda: True)
    declined = cli("studies", "delete", "sweep", input="n\n")
    assert declined.exit_code == 1 and "Really delete 1 study and 1 run?" in declined.output
    assert db.studies.count() == 1
    ok(cli("studies", "delete", "sweep", input="y\n"))
    assert db.studies.count() == 0


# ---------------------------------------------------------------------------- workers
@pytest.fixture
def fleet(db: TrackingDatabase) -> dict[str, str]:
    sim = db.logical_workers.create("sim", ["sim"])
    post = db.logical_workers.create("post", ["post", "post-hi"])
    db.physical_workers.create("sim@n1", pid=1, host="n1", logical_worker_id=sim.id, stale_after=60)
    db.physical_workers.create(
        "sim@n2", pid=2, host="n2", logical_worker_id=sim.id, stale_after=0.05
    )
    db.physical_workers.create("post@n1", pid=3, host="n1", logical_worker_id=post.id)
    db.physical_workers.mark_stopped("post@n1")
    make_run(db, "sweep", "/ws/a", ["sim"])
    time.sleep(0.15)  # sim@n2 misses its heartbeat: STALLED
    return {"sim": sim.id, "post": post.id}


def test_workers_list_both_kinds(cli: Cli, fleet: dict[str, str]) -> None:
    out = ok(cli("workers", "list"))
    assert "Logical workers (2)" in out and "Physical workers (3)" in out
    sim_row = next(line for line in out.splitlines() if line.startswith(fleet["sim"]))
    assert sim_row.split()[1:5] == ["sim", "sim", "1", "1/2"]
    assert widest_line(out) <= 80

    document = cli.json("workers", "list")
    assert set(document) == {"logical_workers", "physical_workers"}
    assert {lw["name"]: lw["live_physical_workers"] for lw in document["logical_workers"]} == {
        "sim": 1,
        "post": 0,
    }
    statuses = {pw["name"]: (pw["status"], pw["alive"]) for pw in document["physical_workers"]}
    assert statuses == {
        "sim@n1": ("RUNNING", True),
        "sim@n2": ("STALLED", False),
        "post@n1": ("STOPPED", False),
    }


def test_workers_list_filters(cli: Cli, fleet: dict[str, str]) -> None:
    logical = cli.json("workers", "list", "--logical", "--queue", "post-hi")
    assert logical["physical_workers"] is None
    assert [lw["name"] for lw in logical["logical_workers"]] == ["post"]

    def names(*args: str) -> list[str]:
        document = cli.json("workers", "list", *args)
        assert document["logical_workers"] is None
        return sorted(pw["name"] for pw in document["physical_workers"])

    assert names("--physical") == ["post@n1", "sim@n1", "sim@n2"]
    assert names("--status", "stalled") == ["sim@n2"]
    assert names("--status", "running") == ["sim@n1"]
    assert names("--status", "STOPPED", "--status", "stalled") == ["post@n1", "sim@n2"]
    assert names("--host", "n1") == ["post@n1", "sim@n1"]
    assert names("--host", "n1", "--status", "running") == ["sim@n1"]
    assert names("--physical", "--queue", "sim") == ["sim@n1", "sim@n2"]
    assert names("--physical", "--queue", "nope") == []
    out = ok(cli("workers", "list", "--physical", "--status", "rebooting"))
    assert "Physical workers (0)" in out and "Logical" not in out


def test_workers_list_errors(cli: Cli, fleet: dict[str, str]) -> None:
    fails(cli("workers", "list", "--status", "dead"), 2, "'dead' is not a valid WorkerStatus")
    fails(cli("workers", "list", "--logical", "--host", "n1"), 2, "drop --logical")


def test_workers_show_physical_and_logical(
    cli: Cli, db: TrackingDatabase, fleet: dict[str, str]
) -> None:
    out = ok(cli("workers", "show", "sim@n2"))
    assert "STALLED (not alive)" in out and "sim (" in out
    physical = cli.json("workers", "show", "sim@n1")
    assert physical["type"] == "physical_worker"
    assert physical["worker"]["name"] == "sim@n1" and physical["worker"]["alive"] is True
    assert physical["logical_worker"]["id"] == fleet["sim"]
    by_id = cli.json("workers", "show", physical["worker"]["id"])
    assert by_id["worker"]["name"] == "sim@n1"

    logical = cli.json("workers", "show", "sim")
    assert logical["type"] == "logical_worker"
    assert logical["worker"]["id"] == fleet["sim"]
    assert sorted(pw["name"] for pw in logical["physical_workers"]) == ["sim@n1", "sim@n2"]
    assert [run["workspace"] for run in logical["runs"]] == ["/ws/a"]
    assert cli.json("workers", "show", fleet["post"])["worker"]["name"] == "post"
    text = ok(cli("workers", "show", "sim"))
    assert "1 live of 2" in text and "/ws/a" in text and widest_line(text) <= 80


def test_workers_show_errors(cli: Cli, db: TrackingDatabase, fleet: dict[str, str]) -> None:
    fails(cli("workers", "show", "nobody"), 1, "no worker matches 'nobody'")
    db.logical_workers.create("sim", ["other"])
    fails(cli("workers", "show", "sim"), 2, "2 logical workers are named 'sim'; give an id")


def test_workers_empty(cli: Cli) -> None:
    out = ok(cli("workers", "list"))
    assert "Logical workers (0)" in out and "Physical workers (0)" in out
    assert cli.json("workers", "list") == {"logical_workers": [], "physical_workers": []}
