"""``info`` and ``watch`` against a real Redis."""

from __future__ import annotations

import json
import time

import pytest

from merlin_tracking import TrackingDatabase, __version__
from tests.support.cli import Cli, make_run, ok, widest_line

LONG_WS = "/scratch/" + "x" * 150


@pytest.fixture
def cli(redis_url: str, prefix: str) -> Cli:
    return Cli(redis_url, prefix)


@pytest.fixture
def busy(db: TrackingDatabase) -> dict[str, str]:
    lw = db.logical_workers.create("sim", ["q"])
    db.physical_workers.create("sim@n1", pid=1, host="n1", logical_worker_id=lw.id, stale_after=60)
    db.physical_workers.create(
        "sim@n2", pid=2, host="n2", logical_worker_id=lw.id, stale_after=0.05
    )
    db.physical_workers.create("sim@n3", pid=3, host="n3", logical_worker_id=lw.id)
    db.physical_workers.mark_stopped("sim@n3")
    done = make_run(db, "sweep", "/ws/done", queued=1, started=1, succeeded=1)
    running = make_run(db, "sweep", LONG_WS, queued=10, started=5, succeeded=4)
    fresh = make_run(db, "other", "/ws/new")
    time.sleep(0.15)
    return {"done": done.id, "running": running.id, "fresh": fresh.id}


def test_info_json(cli: Cli, busy: dict[str, str], prefix: str) -> None:
    document = cli.json("info")
    assert list(document) == [
        "version",
        "backend",
        "url",
        "prefix",
        "server",
        "counts",
        "runs_by_status",
        "workers_by_status",
        "lost_tasks",
        "allocations",
        "recent_runs",
    ]
    assert document["version"] == __version__ and document["backend"] == "redis"
    assert document["prefix"] == prefix
    assert document["server"]["server_version"]
    assert document["counts"] == {"study": 2, "run": 3, "logical_worker": 1, "physical_worker": 3}
    assert document["runs_by_status"] == {
        "INITIALIZED": 1,
        "QUEUED": 0,
        "RUNNING": 1,
        "STALLED": 0,
        "COMPLETED": 1,
        "CANCELLED": 0,
        "FAILED": 0,
    }
    assert document["workers_by_status"] == {
        "RUNNING": 1,
        "STALLED": 1,
        "STOPPED": 1,
        "REBOOTING": 0,
    }
    assert document["lost_tasks"] == {"tasks": 0, "runs": 0}
    assert [run["id"] for run in document["recent_runs"]] == [
        busy["fresh"],
        busy["running"],
        busy["done"],
    ]
    assert cli.json("info", "--recent", "1")["recent_runs"][0]["id"] == busy["fresh"]


def test_info_text(cli: Cli, busy: dict[str, str], redis_url: str) -> None:
    out = ok(cli("info"))
    assert f"merlin_tracking {__version__}" in out
    assert redis_url in out
    assert "2 studies, 3 runs, 1 logical worker, 3 physical workers" in out
    assert "INITIALIZED 1  RUNNING 1  COMPLETED 1" in out
    assert "1 live, 1 stalled, 1 stopped, 0 rebooting" in out
    assert busy["running"] in out and "4/10" in out
    assert widest_line(out) <= 80


def test_info_on_an_empty_ledger(cli: Cli) -> None:
    out = ok(cli("info"))
    assert "0 studies, 0 runs" in out and "Most recent runs" not in out
    assert cli.json("info")["recent_runs"] == []


def test_info_masks_the_password(redis_url: str, prefix: str) -> None:
    # The test server has no password; recent Redis versions accept any for the default user.
    result = Cli(redis_url.replace("redis://", "redis://:s3cret-pw@"), prefix)("info")
    assert result.exit_code in (0, 3), result.output
    assert "s3cret-pw" not in result.output and ":***@" in result.output


def test_watch_once(cli: Cli, busy: dict[str, str]) -> None:
    out = ok(cli("watch", "--once"))
    assert "Active runs (2)" in out and "Workers (2)" in out  # sim@n3 is stopped
    assert "[####------]  40%" in out and "4/10" in out
    assert busy["done"] not in out
    assert "sim@n2  STALLED  no" in out and "sim@n1  RUNNING  yes" in out
    assert "\x1b" not in out  # no screen clearing when not on a terminal
    assert widest_line(out) <= 80

    frame = cli.json("watch", "--once")
    assert list(frame) == ["generated_at", "url", "prefix", "runs", "workers"]
    assert [run["id"] for run in frame["runs"]] == [busy["fresh"], busy["running"]]
    assert {pw["name"]: pw["alive"] for pw in frame["workers"]} == {
        "sim@n1": True,
        "sim@n2": False,
    }
    assert frame["workers"][0]["logical_worker_name"] == "sim"


def test_watch_refreshes_until_count_or_ctrl_c(
    cli: Cli, busy: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ok(cli("watch", "--interval", "0.01", "--count", "3"))
    assert out.count("Active runs (2)") == 3

    lines = ok(cli("watch", "--interval", "0.01", "--count", "2", "--json")).splitlines()
    assert len(lines) == 2 and all(json.loads(line)["runs"] for line in lines)

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("merlin_tracking.cli.watch.time.sleep", interrupt)
    result = cli("watch")
    assert result.exit_code == 0 and result.stdout.count("Active runs") == 1


def test_watch_limits_rows(cli: Cli, db: TrackingDatabase) -> None:
    for i in range(5):
        make_run(db, "s", f"/ws/{i}")
    out = ok(cli("watch", "--once", "--limit", "2"))
    assert "Active runs (5)" in out and "… and 3 more" in out


def test_watch_with_nothing_active(cli: Cli) -> None:
    out = ok(cli("watch", "--once"))
    assert "Active runs (0)\n  none" in out and "Workers (0)\n  none" in out
    assert cli.json("watch", "--once")["runs"] == []


def test_watch_bad_interval(cli: Cli) -> None:
    result = cli("watch", "--interval", "0")
    assert result.exit_code == 2 and "--interval" in result.stderr
