"""``gc``, ``export`` and ``import`` against a real Redis."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from merlin_tracking import TrackingDatabase, WorkerStatus
from merlin_tracking.cli import options
from tests.support.cli import Cli, fails, make_run, ok, widest_line


@pytest.fixture
def cli(redis_url: str, prefix: str) -> Cli:
    return Cli(redis_url, prefix)


# ---------------------------------------------------------------------------- gc
@pytest.fixture
def garbage(db: TrackingDatabase) -> dict[str, str]:
    """An old stopped worker (and its now idle logical worker), a fresh stopped one, a live one."""
    old = datetime.now(timezone.utc) - timedelta(days=3)
    idle = db.logical_workers.create("idle", ["idle"])
    busy = db.logical_workers.create("busy", ["busy"])
    gone = db.physical_workers.create(
        "idle@n1", pid=1, logical_worker_id=idle.id, heartbeat_timestamp=old
    )
    db.physical_workers.update(gone.id, status=WorkerStatus.STOPPED)
    recent = db.physical_workers.create("busy@n1", pid=2, logical_worker_id=busy.id)
    db.physical_workers.mark_stopped(recent.id)
    db.physical_workers.create("busy@n2", pid=3, logical_worker_id=busy.id)
    make_run(db, "s", "/ws", ["busy"])
    return {"gone": gone.id, "idle": idle.id, "recent": recent.id}


def test_gc_dry_run_then_for_real(cli: Cli, db: TrackingDatabase, garbage: dict[str, str]) -> None:
    out = ok(cli("gc", "--dry-run"))
    assert out.startswith("Would remove 1 physical worker, 1 logical worker, 0 dangling")
    assert "idle@n1" in out and garbage["idle"] in out and widest_line(out) <= 80
    assert db.physical_workers.count() == 3

    fails(cli("gc"), 2, "refusing to remove 2 items without --yes")
    assert db.physical_workers.count() == 3

    document = cli.json("gc", "--yes")
    assert document == {
        "dry_run": False,
        "older_than_seconds": 86400.0,
        "physical_workers": [garbage["gone"]],
        "logical_workers": [garbage["idle"]],
        "dangling": [],
    }
    assert db.physical_workers.count() == 2 and db.logical_workers.count() == 1
    assert ok(cli("gc", "--yes")) == "Nothing to collect.\n"
    assert ok(cli("gc")) == "Nothing to collect.\n"  # nothing to remove: no --yes needed


def test_gc_older_than(cli: Cli, db: TrackingDatabase, garbage: dict[str, str]) -> None:
    assert cli.json("gc", "--older-than", "5d", "--dry-run")["physical_workers"] == []
    time.sleep(0.2)
    found = cli.json("gc", "--older-than", "0.1s", "--dry-run")
    assert found["dry_run"] is True and found["older_than_seconds"] == 0.1
    assert sorted(found["physical_workers"]) == sorted([garbage["gone"], garbage["recent"]])
    fails(cli("gc", "--older-than", "soon"), 2, "'soon' is not a duration")


def test_gc_repairs_dangling_references(
    cli: Cli, db: TrackingDatabase, raw_redis, prefix: str
) -> None:
    run = make_run(db, "s", "/ws")
    raw_redis.sadd(f"{{{prefix}}}:study:{run.study_id}:runs", "999999")  # run r999999
    found = cli.json("gc", "--dry-run")
    assert len(found["dangling"]) == 1 and "r999999" in found["dangling"][0]
    out = ok(cli("gc", "--yes"))
    assert "1 dangling reference" in out
    assert cli.json("gc", "--dry-run")["dangling"] == []


def test_gc_asks_on_a_terminal(
    cli: Cli, db: TrackingDatabase, garbage: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(options, "is_interactive", lambda: True)
    declined = cli("gc", input="n\n")
    assert declined.exit_code == 1 and "Really remove 2 items?" in declined.output
    assert db.physical_workers.count() == 3
    ok(cli("gc", input="y\n"))
    assert db.physical_workers.count() == 2


# ---------------------------------------------------------------------------- export / import
def test_export_to_stdout_and_file_then_import(
    cli: Cli, db: TrackingDatabase, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    lw = db.logical_workers.create("sim", ["q"])
    db.physical_workers.create("sim@n1", pid=1, logical_worker_id=lw.id)
    run = make_run(db, "sweep", "/ws/ü", queued=3, started=2, succeeded=1, parameters={"x": 1})

    document = json.loads(ok(cli("export", "/ws/ü")))
    assert list(document) == [
        "schema",
        "exported_at",
        "run",
        "study",
        "logical_workers",
        "physical_workers",
    ]
    assert document["run"]["id"] == run.id and document["study"]["name"] == "sweep"
    assert json.loads(ok(cli("export", run.id, "--json"))) == {**document, "exported_at": ANY}

    target = tmp_path / "run.json"
    out = ok(cli("export", run.id, "-o", str(target)))
    assert out == f"Exported run {run.id} (/ws/ü) to {target}\n"
    assert json.loads(target.read_text())["run"]["workspace"] == "/ws/ü"
    assert cli.json("export", run.id, "-o", str(target)) == {
        "run_id": run.id,
        "workspace": "/ws/ü",
        "file": str(target),
    }

    fails(cli("import", str(target)), 1, "already exists")

    other = Cli(redis_url, prefix + "_copy")
    imported = other.json("import", str(target))
    assert imported["run"]["id"] == run.id
    assert imported["run"]["counters"]["queued"] == 3 and imported["run"]["study_name"] == "sweep"
    copy = TrackingDatabase.from_url(redis_url, prefix=prefix + "_copy")
    assert copy.runs.get("/ws/ü").parameters == {"x": 1}
    copy.delete_everything()

    from_stdin = other("import", "-", input=target.read_text())
    assert ok(from_stdin) == f"Imported run {run.id} (/ws/ü)\n"
    copy.delete_everything()


def test_export_errors(cli: Cli, tmp_path: Path) -> None:
    fails(cli("export", "/no/such"), 1, "no run matches '/no/such'")
    fails(cli("export", "x", "-o", str(tmp_path)), 2, "is a directory")


def test_import_errors(cli: Cli, db: TrackingDatabase, tmp_path: Path) -> None:
    fails(cli("import", str(tmp_path / "missing.json")), 2, "does not exist")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    fails(cli("import", str(bad_json)), 2, "is not JSON")
    not_export = tmp_path / "other.json"
    not_export.write_text(json.dumps({"hello": "world"}))
    fails(cli("import", str(not_export)), 2, "not a merlin_tracking export")
    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps({"schema": "merlin_tracking.export/1", "run": {"id": 5}, "study": None})
    )
    fails(cli("import", str(broken)), 2)
    odd_study = tmp_path / "odd.json"
    make_run(db, "s", "/ws/odd")
    document = db.export_run("/ws/odd")
    db.delete_everything()
    odd_study.write_text(json.dumps({**document, "study": ["not", "an", "object"]}))
    fails(cli("import", str(odd_study)), 2, "'study' must be an object")
    assert db.runs.count() == 0


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY = _Any()
