"""A real single-node SLURM (Debian's slurm-wlm: slurmctld and slurmd on loopback, with munge):
a worker started by ``sbatch`` carries its job id, and ``scancel`` makes its running task LOST
with the allocation as the reason. Skipped, saying why, where SLURM cannot start here."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from merlin_tracking import RunStatus, TaskState
from tests.support.processes import APP, REPO_ROOT, Ledger, unique, wait_until

pytestmark = pytest.mark.slow

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scancel", "sinfo")
STALE = 12.0  # the worker's stale_after: longer than its beats go on after the cancel (KillWait)


@dataclass
class Slurm:
    conf: Path

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str) -> str:
        done = subprocess.run(
            cmd, env={**os.environ, **self.env()}, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)
        return done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(folder: Path, node: str) -> Path:
    conf = folder / "slurm.conf"
    conf.write_text(
        f"""ClusterName=mt
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
KillWait=2
MinJobAge=300
ReturnToService=2
MpiDefault=none
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    )
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    return conf


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"SLURM is not installed ({', '.join(missing)} missing): apt-get install "
            "slurm-wlm munge"
        )
    if os.geteuid() != 0:
        pytest.skip("slurmd needs root to start jobs as their user")
    folder = tmp_path_factory.mktemp("slurm")
    node = socket.gethostname().split(".")[0]
    conf = _config(folder, node)
    started: list[Path] = []
    munge_pid = Path(f"/run/munge/mt-test-{os.getpid()}.pid")  # a folder munge may write
    if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(
            ["su", "-s", "/bin/sh", "munge", "-c", f"/usr/sbin/munged --pid-file={munge_pid}"],
            check=False,
        )
        started.append(munge_pid)
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon, "-c", "-f", str(conf)], check=False)
        started.append(folder / f"{daemon}.pid")
    cluster = Slurm(conf)
    try:

        def idle() -> bool:
            try:
                return "idle" in cluster.run("sinfo", "-h", "-o", "%T")
            except (AssertionError, subprocess.TimeoutExpired):
                return False

        try:
            wait_until(idle, 30, "the SLURM node to be idle", interval=0.5)
        except pytest.fail.Exception:
            logs = "".join(p.read_text()[-1500:] for p in folder.glob("*.log"))
            pytest.skip(f"slurmctld and slurmd did not start on loopback here:\n{logs}")
        yield cluster
    finally:
        for pid_file in reversed(started):
            pid = _pid(pid_file)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)


def test_a_worker_started_by_sbatch_and_scancelled_loses_its_task_to_the_allocation(
    ledger: Ledger, slurm: Slurm
) -> None:
    node = f"{unique('w')}@slurm"
    script = ledger.tmp_path / "worker.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"exec {sys.executable} -m celery -A {APP} worker --pool solo -n {node} "
        f"-Q {ledger.queue} --without-mingle --without-gossip --loglevel INFO\n"
    )
    env = {
        **ledger.env(PLAIN_APP_STALE_AFTER=str(STALE)),
        **slurm.env(),
    }
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-J",
            "mt-sweep",
            "-t",
            "10",
            f"--chdir={REPO_ROOT}",
            f"--output={ledger.tmp_path}/slurm-%j.out",
            str(script),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    out = ledger.tmp_path / f"slurm-{job_id}.out"
    db = ledger.db

    def recorded() -> object:
        found = db.physical_workers.get_all({"job_id": job_id, "status": "running"})
        return found[0] if found else None

    record = wait_until(
        recorded,
        60,
        f"the worker of job {job_id}",
        interval=0.2,
        on_timeout=lambda: out.read_text() if out.exists() else "",
    )
    assert (record.name, record.scheduler, record.job_name) == (node, "slurm", "mt-sweep")  # type: ignore[attr-defined]
    assert record.job_ends_at is not None  # type: ignore[attr-defined]  # from squeue (22.05)
    client = ledger.client()
    run = ledger.launch(client, client.signature("plain_app.sleeper", args=(120,)))
    wait_until(
        lambda: db.tasks.get_all({"run_id": run.id, "state": "STARTED"}), 30, "the task to start"
    )
    slurm.run("scancel", job_id)

    def lost() -> str | None:
        (task,) = db.tasks.get_all({"run_id": run.id})
        return task.error if task.state is TaskState.LOST else None

    error = wait_until(
        lost,
        60,
        "the task to be lost",
        interval=0.2,
        on_timeout=lambda: out.read_text() if out.exists() else "",
    )
    assert error.startswith(f"allocation {job_id} (slurm) ended at "), error
    assert f"worker {node} stopped heartbeating at " in error
    assert db.runs.get(run.id).status is RunStatus.STALLED
