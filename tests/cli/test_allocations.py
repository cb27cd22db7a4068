"""Batch jobs in the command line: ``workers list --job``, ``workers show``, ``info`` and their
JSON, on both stores; ``workers drain`` refusing what it cannot do (real drains:
tests/celery/test_allocations.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from merlin_tracking import TrackingDatabase, WorkerStatus
from tests.support.cli import Cli, fails, ok, store_cli

ENDS = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def cli(request: pytest.FixtureRequest, store_backend: str, prefix: str) -> Cli:
    return store_cli(request, store_backend, prefix)


@pytest.fixture
def jobs(db: TrackingDatabase) -> TrackingDatabase:
    lw = db.logical_workers.create("sim", ["q"])
    for name, job in (("sim@cn01", "4242"), ("sim@cn02", "4242"), ("sim@laptop", None)):
        db.physical_workers.create(
            name,
            pid=1,
            logical_worker_id=lw.id,
            status=WorkerStatus.RUNNING,
            stale_after=3600,
            scheduler="slurm" if job else None,
            job_id=job,
            job_name="sweep" if job else None,
            job_nodes="cn[01-02]" if job else None,
            job_ends_at=ENDS if job else None,
        )
    return db


def test_workers_list_filters_by_job_and_shows_it(cli: Cli, jobs: TrackingDatabase) -> None:
    out = ok(cli("workers", "list", "--job", "4242"))
    assert "Physical workers (2)" in out and "JOB" in out
    assert "sim@cn01" in out and "sim@cn02" in out and "laptop" not in out
    document = cli.json("workers", "list", "--job", "4242")
    assert document["logical_workers"] is None  # --job implies --physical
    (first, _) = document["physical_workers"]
    assert {k: first[k] for k in ("scheduler", "job_id", "job_name", "job_nodes")} == {
        "scheduler": "slurm",
        "job_id": "4242",
        "job_name": "sweep",
        "job_nodes": "cn[01-02]",
    }
    assert first["job_ends_at"] == ENDS.isoformat()
    assert "No" not in ok(cli("workers", "list", "--job", "nope"))  # an empty list
    fails(cli("workers", "list", "--logical", "--job", "4242"), 2, "--job")


def test_workers_show_and_info_carry_the_allocation(cli: Cli, jobs: TrackingDatabase) -> None:
    shown = ok(cli("workers", "show", "sim@cn01"))
    assert "4242 (slurm) sweep on cn[01-02], ends 2030-05-01 12:00:00 UTC" in shown
    assert "Job" in ok(cli("workers", "show", "sim@laptop"))
    assert cli.json("workers", "show", "sim@laptop")["worker"]["job_id"] is None
    info = ok(cli("info"))
    assert "slurm 4242 (sweep), 2 live, ends 2030-05-01 12:00 UTC" in info
    assert cli.json("info")["allocations"] == [
        {
            "scheduler": "slurm",
            "job_id": "4242",
            "job_name": "sweep",
            "job_ends_at": ENDS.isoformat(),
            "live_workers": 2,
        }
    ]


def test_drain_needs_a_target_a_live_worker_and_a_broker(cli: Cli, jobs: TrackingDatabase) -> None:
    fails(cli("workers", "drain"), 2, "--job")
    fails(cli("workers", "drain", "--job", "nope"), 1, "no live worker")
    fails(cli("workers", "drain", "--job", "4242", "--yes"), 2, "no broker")
    dry = cli.json("workers", "drain", "--job", "4242", "--dry-run")
    assert dry["dry_run"] is True and dry["drained"] == []
    assert [w["name"] for w in dry["workers"]] == ["sim@cn01", "sim@cn02"]
    assert "Would drain sim@cn01 (no longer consuming q)" in ok(
        cli("workers", "drain", "--worker", "sim@cn01", "--dry-run")
    )
