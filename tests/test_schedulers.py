"""Reading the batch allocation: each scheduler's environment as it sets it, and its end time
from the scheduler's own command (fake commands on PATH, really run), asked once per job."""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from merlin_tracking import schedulers
from merlin_tracking.schedulers import Allocation, detect, ends_at

# Found before a test narrows PATH: the fake commands use them by their full path.
CAT, SLEEP = shutil.which("cat"), shutil.which("sleep")


def fake_command(folder: Path, name: str, output: str, delay: float = 0.0) -> Path:
    """A ``name`` script that logs its arguments to ``name.calls`` and prints ``output``."""
    log = folder / f"{name}.calls"
    script = folder / name
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        + (f"{SLEEP} {delay}\n" if delay else "")
        + f"{CAT} <<'EOF'\n{output}\nEOF\n"
    )
    script.chmod(0o755)
    return log


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(schedulers, "_asked", {})
    return folder


def test_slurm_as_sbatch_sets_it() -> None:
    env = {
        "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NAME": "sweep",
        "SLURM_JOB_NODELIST": "node[01-04]",
        "SLURM_JOB_END_TIME": "1777777777",
    }
    assert detect(env) == Allocation(
        "slurm",
        "123456",
        "sweep",
        "node[01-04]",
        datetime.fromtimestamp(1777777777, timezone.utc),
    )
    # Older Slurm: SLURM_JOBID and SLURM_NODELIST, no end in the environment.
    assert detect({"SLURM_JOBID": "9", "SLURM_NODELIST": "n1"}) == Allocation(
        "slurm", "9", None, "n1"
    )


def test_flux_lsf_and_pbs_as_they_set_it(tmp_path: Path) -> None:
    assert detect({"FLUX_JOB_ID": "f2Bxqr5M"}) == Allocation("flux", "f2Bxqr5M")
    # A Flux instance inside a SLURM job: Flux started the worker.
    assert detect({"FLUX_JOB_ID": "f1", "SLURM_JOB_ID": "7"}).scheduler == "flux"  # type: ignore[union-attr]
    lsf = {"LSB_JOBID": "5501", "LSB_JOBNAME": "sim", "LSB_MCPU_HOSTS": "hostA 4 hostB 4"}
    assert detect(lsf) == Allocation("lsf", "5501", "sim", "hostA,hostB")
    assert detect({"LSB_JOBID": "1", "LSB_HOSTS": "hostA hostA hostB"}) == Allocation(
        "lsf", "1", None, "hostA,hostB"
    )
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n01\nn01\nn02\n")
    pbs = {"PBS_JOBID": "42.server", "PBS_JOBNAME": "run", "PBS_NODEFILE": str(nodefile)}
    assert detect(pbs) == Allocation("pbs", "42.server", "run", "n01,n02")
    assert detect({"PATH": "/bin"}) is None


def test_the_slurm_end_is_asked_once_per_job(bin_dir: Path) -> None:
    log = fake_command(bin_dir, "squeue", "2030-05-01T12:00:00")
    job = Allocation("slurm", "123")
    expected = datetime(2030, 5, 1, 12, 0).astimezone(timezone.utc)  # squeue prints local time
    assert ends_at(job) == expected
    assert ends_at(job) == expected
    assert log.read_text().splitlines() == ["-h -t all -j 123 -o %e"]
    # The environment's end needs no command at all.
    given = datetime(2031, 1, 1, tzinfo=timezone.utc)
    assert ends_at(Allocation("slurm", "124", ends_at=given)) == given
    assert len(log.read_text().splitlines()) == 1


def test_scontrol_when_squeue_is_missing(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(bin_dir))  # no squeue anywhere
    fake_command(
        bin_dir,
        "scontrol",
        "JobId=5 JobName=x\n   StartTime=2030-05-01T10:00:00 "
        "EndTime=2030-05-01T12:00:00 Deadline=N/A",
    )
    assert ends_at(Allocation("slurm", "5")) == datetime(2030, 5, 1, 12).astimezone(timezone.utc)


def test_a_hanging_scheduler_is_given_up_after_the_timeout(bin_dir: Path) -> None:
    log = fake_command(bin_dir, "squeue", "2030-05-01T12:00:00", delay=30)
    job = Allocation("slurm", "77")
    started = time.monotonic()
    assert ends_at(job, timeout=0.5) is None
    assert time.monotonic() - started < 5
    assert ends_at(job, timeout=0.5) is None  # the unknown answer is cached too
    assert len(log.read_text().splitlines()) == 1


def test_flux_lsf_and_pbs_ends(bin_dir: Path) -> None:
    fake_command(bin_dir, "flux", "3600.5")
    fake_command(bin_dir, "bjobs", "1:30 L")
    fake_command(
        bin_dir,
        "qstat",
        "Job Id: 42.server\n    Job_Name = run\n    Resource_List.walltime = 02:00:00\n"
        "    stime = Fri May  1 10:00:00 2030\n",
    )
    before = datetime.now(timezone.utc)
    flux_end = ends_at(Allocation("flux", "f1"))
    lsf_end = ends_at(Allocation("lsf", "5501"))
    after = datetime.now(timezone.utc)
    assert flux_end is not None and lsf_end is not None
    assert before + timedelta(seconds=3600) <= flux_end <= after + timedelta(seconds=3601)
    assert before + timedelta(minutes=90) <= lsf_end <= after + timedelta(minutes=90)
    assert ends_at(Allocation("pbs", "42.server")) == datetime(2030, 5, 1, 12).astimezone(
        timezone.utc
    )
    assert (bin_dir / "flux.calls").read_text().split() == ["job", "timeleft"]
    assert (bin_dir / "bjobs.calls").read_text().split() == ["-noheader", "-o", "time_left", "5501"]
    assert (bin_dir / "qstat.calls").read_text().split() == ["-f", "42.server"]


def test_an_unlimited_or_unreadable_answer_is_no_end(bin_dir: Path) -> None:
    fake_command(bin_dir, "flux", "inf")
    fake_command(bin_dir, "squeue", "N/A")
    assert ends_at(Allocation("flux", "f9")) is None
    assert ends_at(Allocation("slurm", "9")) is None
