"""The batch allocation a worker runs in: SLURM, Flux, LSF or PBS, read from its environment.

Each scheduler sets variables in the environment of the processes it starts; ``detect`` reads
them (no command, no I/O beyond a PBS node file), one function per scheduler, innermost first:
a Flux instance started inside a SLURM or LSF job is what launched the worker. The end of the
allocation is in the environment only for newer Slurm; otherwise ``ends_at`` asks the
scheduler's own command once per job id and process (cached, ``QUERY_TIMEOUT`` seconds at
most), since a scheduler's daemon is shared by every user of the cluster. This module imports
no Celery: the bootstep calls it before any task runs, never on the task path.

Variables and commands (docs/hpc.md says which were checked against each scheduler's manual):

- SLURM (sbatch(1), OUTPUT ENVIRONMENT VARIABLES): ``SLURM_JOB_ID`` (older: ``SLURM_JOBID``),
  ``SLURM_JOB_NAME``, ``SLURM_JOB_NODELIST`` (older: ``SLURM_NODELIST``; Slurm's compressed
  host list, ``node[01-04]``), ``SLURM_JOB_END_TIME`` (seconds since the epoch, newer Slurm
  only); else ``squeue -h -t all -j ID -o %e`` (the end, or the expected end from the time
  limit, in local time; ``-t all`` lists a job that just ended, with the time it ended), else
  ``scontrol show job ID`` (``EndTime=``).
- Flux (flux-environment(7)): ``FLUX_JOB_ID``; the end from ``flux job timeleft`` (seconds
  left, run inside the job).
- LSF (IBM's "Environment variables set for job execution"): ``LSB_JOBID``, ``LSB_JOBNAME``,
  ``LSB_MCPU_HOSTS`` (``hostA 4 hostB 4``) else ``LSB_HOSTS`` (one name per slot); the end
  from ``bjobs -noheader -o time_left ID`` (``hours:minutes`` left, then a status letter).
- PBS (Torque and PBS Pro qsub(1)): ``PBS_JOBID``, ``PBS_JOBNAME``, ``PBS_NODEFILE`` (a file of
  one host per slot); the end from ``qstat -f ID``: its start (``stime``, or Torque's
  ``start_time``) plus ``Resource_List.walltime``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone

#: Seconds a scheduler command may take before its answer is given up (the end stays unknown).
QUERY_TIMEOUT = 2.0
SCHEDULERS = ("slurm", "flux", "lsf", "pbs")


@dataclasses.dataclass(frozen=True)
class Allocation:
    """A batch job as its scheduler described it to the worker."""

    scheduler: str  # one of SCHEDULERS
    job_id: str
    job_name: str | None = None
    nodes: str | None = None  # as the scheduler writes it (Slurm: a compressed host list)
    ends_at: datetime | None = None  # from the environment; else see ``ends_at``


Environ = Mapping[str, str]


def _get(env: Environ, *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _epoch(text: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(text or ""), timezone.utc) if text else None
    except (ValueError, OverflowError, OSError):
        return None


def _unique(names: Sequence[str]) -> str | None:
    return ",".join(dict.fromkeys(n for n in names if n)) or None


def slurm(env: Environ) -> Allocation | None:
    job_id = _get(env, "SLURM_JOB_ID", "SLURM_JOBID")
    if job_id is None:
        return None
    return Allocation(
        "slurm",
        job_id,
        _get(env, "SLURM_JOB_NAME"),
        _get(env, "SLURM_JOB_NODELIST", "SLURM_NODELIST"),
        _epoch(_get(env, "SLURM_JOB_END_TIME")),
    )


def flux(env: Environ) -> Allocation | None:
    job_id = _get(env, "FLUX_JOB_ID")
    return None if job_id is None else Allocation("flux", job_id)


def lsf(env: Environ) -> Allocation | None:
    job_id = _get(env, "LSB_JOBID")
    if job_id is None:
        return None
    mcpu = (_get(env, "LSB_MCPU_HOSTS") or "").split()
    hosts = mcpu[0::2] if mcpu else (_get(env, "LSB_HOSTS") or "").split()
    return Allocation("lsf", job_id, _get(env, "LSB_JOBNAME"), _unique(hosts))


def pbs(env: Environ) -> Allocation | None:
    job_id = _get(env, "PBS_JOBID")
    if job_id is None:
        return None
    nodes = None
    node_file = _get(env, "PBS_NODEFILE")
    if node_file:
        try:
            with open(node_file, encoding="utf-8", errors="replace") as handle:
                nodes = _unique([line.strip() for line in handle])
        except OSError:
            pass
    return Allocation("pbs", job_id, _get(env, "PBS_JOBNAME"), nodes)


_DETECTORS: tuple[Callable[[Environ], Allocation | None], ...] = (flux, slurm, lsf, pbs)


def detect(env: Environ | None = None) -> Allocation | None:
    """The allocation named by the environment (innermost scheduler first), or None."""
    environ = os.environ if env is None else env
    for detector in _DETECTORS:
        found = detector(environ)
        if found is not None:
            return found
    return None


# ----------------------------------------------------------------------------- end time
def _run(cmd: list[str], timeout: float) -> str | None:
    """The command's stdout, or None if it is missing, fails or outlasts ``timeout``."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _local(text: str, form: str | None = None) -> datetime | None:
    """A time the scheduler printed in the local time zone, as UTC."""
    try:
        naive = datetime.strptime(text, form) if form else datetime.fromisoformat(text)
    except ValueError:
        return None
    return naive.astimezone(timezone.utc) if naive.tzinfo is None else naive


def _clock(text: str) -> timedelta | None:
    """``[[DD:]HH:]MM:SS`` or ``HH:MM`` as a duration."""
    parts = text.strip().split(":")
    if not all(p.isdigit() for p in parts) or not 2 <= len(parts) <= 4:
        return None
    numbers = [int(p) for p in parts]
    if len(numbers) == 2:
        return timedelta(hours=numbers[0], minutes=numbers[1])
    *rest, hours, minutes, seconds = [0] * (4 - len(numbers)) + numbers
    return timedelta(days=rest[0], hours=hours, minutes=minutes, seconds=seconds)


def _slurm_end(job_id: str, timeout: float, now: datetime) -> datetime | None:
    squeue = ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%e"]
    out = _run(squeue, timeout) if shutil.which("squeue") else ""
    if out is not None and not out.strip():  # no squeue, or it no longer lists the job
        shown = _run(["scontrol", "show", "job", job_id], timeout) or ""
        found = re.search(r"\bEndTime=(\S+)", shown)
        out = found.group(1) if found else ""
    return _local((out or "").strip())


def _flux_end(job_id: str, timeout: float, now: datetime) -> datetime | None:
    out = (_run(["flux", "job", "timeleft"], timeout) or "").strip()
    try:
        left = float(out)
    except ValueError:
        return None
    return now + timedelta(seconds=left) if 0 <= left < float("inf") else None


def _lsf_end(job_id: str, timeout: float, now: datetime) -> datetime | None:
    out = _run(["bjobs", "-noheader", "-o", "time_left", job_id], timeout) or ""
    found = re.match(r"\s*(\d+:\d+)", out)
    left = _clock(found.group(1)) if found else None
    return now + left if left is not None else None


def _pbs_end(job_id: str, timeout: float, now: datetime) -> datetime | None:
    out = _run(["qstat", "-f", job_id], timeout) or ""
    attrs = dict(re.findall(r"^\s*([\w.]+) = (.*?)\s*$", out, re.MULTILINE))
    walltime = _clock(attrs.get("Resource_List.walltime", ""))
    started = _epoch(attrs.get("start_time")) or _local(
        " ".join(attrs.get("stime", "").split()), "%a %b %d %H:%M:%S %Y"
    )
    return started + walltime if started is not None and walltime is not None else None


_END_QUERIES: dict[str, Callable[[str, float, datetime], datetime | None]] = {
    "slurm": _slurm_end,
    "flux": _flux_end,
    "lsf": _lsf_end,
    "pbs": _pbs_end,
}
_asked: dict[tuple[str, str], datetime | None] = {}
_asked_lock = threading.Lock()


def ends_at(allocation: Allocation, timeout: float = QUERY_TIMEOUT) -> datetime | None:
    """When the allocation ends: from the environment, else from one query of its scheduler
    per job id in this process (the answer, or None when it gave none in ``timeout``)."""
    if allocation.ends_at is not None:
        return allocation.ends_at
    key = (allocation.scheduler, allocation.job_id)
    with _asked_lock:  # concurrent callers wait for the one query rather than repeat it
        if key not in _asked:
            query = _END_QUERIES[allocation.scheduler]
            _asked[key] = query(allocation.job_id, timeout, datetime.now(timezone.utc))
        return _asked[key]


def ended_early(allocation: Allocation, timeout: float = QUERY_TIMEOUT) -> datetime | None:
    """The end a scheduler gives a job it is ending now (a cancel, a preemption): asked once
    more, when the worker is told to shut down. Slurm moves a cancelled job's end time to the
    moment of the cancel; an answer later than the one cached is not an early end."""
    known = ends_at(allocation, timeout)
    query = _END_QUERIES[allocation.scheduler]
    now = datetime.now(timezone.utc)
    fresh = query(allocation.job_id, timeout, now)
    if fresh is None or fresh > now + timedelta(seconds=timeout) or fresh == known:
        return None
    with _asked_lock:
        _asked[(allocation.scheduler, allocation.job_id)] = fresh
    return fresh
