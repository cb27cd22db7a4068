"""The example study runs end to end: real worker processes, a real tracked run."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from merlin_tracking import RunStatus, TrackingDatabase, WorkerStatus

REPO = Path(__file__).resolve().parents[1]


def run_example(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.parameter_sweep.run", "--samples", "8", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )


def next_commands(stdout: str) -> list[list[str]]:
    """The commands the example prints last, to read its ledger."""
    tail = stdout.split("read the ledger next with:\n", 1)[1]
    return [shlex.split(line) for line in tail.splitlines() if line.startswith("  ")]


def cli_env() -> dict[str, str]:
    """The environment without the tracking settings: the printed command must name the store."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MERLIN_TRACKING")}


@pytest.mark.slow
def test_parameter_sweep_on_redis(redis_url: str, prefix: str, tmp_path: Path) -> None:
    result = run_example(
        "--redis", redis_url, env={"MERLIN_TRACKING_PREFIX": prefix, "TMPDIR": str(tmp_path)}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status COMPLETED" in result.stdout
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone
    show, listing = next_commands(result.stdout)
    assert show[1:5] == ["--url", redis_url, "--prefix", prefix]
    assert show[-3:-1] == ["runs", "show"] and listing[-2:] == ["runs", "list"]
    shown = subprocess.run(show, capture_output=True, text=True, timeout=60, env=cli_env())
    assert shown.returncode == 0 and "COMPLETED" in shown.stdout, shown.stderr
    assert "queued=9  started=9  succeeded=9  failed=0" in result.stdout
    assert "Traceback" not in result.stderr
    db = TrackingDatabase.from_url(redis_url, prefix=prefix)
    (run,) = db.runs.get_all()
    assert run.status is RunStatus.COMPLETED
    assert set(run.queues) == {"sim", "post"}
    workers = db.physical_workers.get_all()
    assert sorted(w.name.split("@")[0] for w in workers) == ["post", "sim"]
    assert all(w.status is WorkerStatus.STOPPED and w.pid is None for w in workers)
    assert {lw.name for lw in db.logical_workers.get_all({"queues": ["sim", "post"]})} == {
        "sim",
        "post",
    }


@pytest.mark.slow
def test_parameter_sweep_needs_no_services(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"MERLIN_TRACKING_DB": str(ledger), "MERLIN_TRACKING_URL": "", "TMPDIR": str(scratch)}
    result = run_example(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status COMPLETED" in result.stdout
    assert list(scratch.iterdir()) == []
    show, _ = next_commands(result.stdout)
    assert show[1:3] == ["--url", f"sqlite:///{ledger}"] and "--prefix" not in show
    shown = subprocess.run(show, capture_output=True, text=True, timeout=60, env=cli_env())
    assert shown.returncode == 0 and "COMPLETED" in shown.stdout, shown.stderr
    assert "Traceback" not in result.stderr
    db = TrackingDatabase.from_url(f"sqlite:///{ledger}")
    (run,) = db.runs.get_all()
    assert run.status is RunStatus.COMPLETED
    # 8 simulations and the aggregation, plus the chord_unlock task a filesystem result backend
    # needs: every task of the run is counted, each once.
    assert run.tasks_succeeded == run.tasks_queued >= 9
    assert run.tasks_failed == 0
    assert sorted(w.name.split("@")[0] for w in db.physical_workers.get_all()) == ["post", "sim"]
