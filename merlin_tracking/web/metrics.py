"""``/metrics``: the ledger in the Prometheus text format (version 0.0.4), rendered here.

The labels are bounded by design: run and worker statuses, task counters and states (fixed
enums), and logical worker names (one per worker role, which stay as processes come and go).
No label names a run, a task or a physical worker process, which churn without bound; those
are in the JSON API. Rendering takes no dependency: the format is a few lines of text.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from merlin_tracking.database import TrackingDatabase
from merlin_tracking.records import RunStatus, WorkerStatus
from merlin_tracking.records.run import ACTIVE_STATUSES
from merlin_tracking.version import __version__
from merlin_tracking.web.queries import uncovered_queues

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COUNTERS = ("queued", "started", "succeeded", "failed", "retried", "revoked", "lost")


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        inner = ",".join(f'{key}="{_label_value(v)}"' for key, v in labels.items())
        lines.append(f"{name}{{{inner}}} {value:g}" if inner else f"{name} {value:g}")
    return lines


def render(db: TrackingDatabase, now: datetime | None = None) -> str:
    """Every metric, read from the ledger now (one scrape is a handful of reads)."""
    began = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    runs_by_status = db.runs.count_by_status()
    physical = db.physical_workers.get_all()
    logical = {lw.id: lw for lw in db.logical_workers.get_all()}
    active = db.runs.get_all({"status": [status.value for status in ACTIVE_STATUSES]})
    uncovered = uncovered_queues(db)

    workers_by_status = {status.value: 0 for status in WorkerStatus}
    for pw in physical:
        workers_by_status[pw.status.value] += 1
    tasks = dict.fromkeys(COUNTERS, 0)
    for run in active:
        for counter, n in run.counters.items():
            tasks[counter] += n
    ages: dict[str, float] = defaultdict(float)
    live: dict[str, int] = defaultdict(int)
    for pw in physical:
        if pw.status is WorkerStatus.STOPPED or pw.heartbeat_timestamp is None:
            continue
        name = logical[pw.logical_worker_id].name if pw.logical_worker_id in logical else "-"
        age = max(0.0, (now - pw.heartbeat_timestamp).total_seconds())
        ages[name] = max(ages[name], age)
        live[name] += pw.status is WorkerStatus.RUNNING

    lines = [
        *_family(
            "merlin_tracking_info",
            "gauge",
            "The package version serving these metrics.",
            [({"version": __version__, "backend": db.store.backend}, 1)],
        ),
        *_family(
            "merlin_tracking_runs",
            "gauge",
            "Runs in the ledger, by status.",
            [({"status": s.value}, runs_by_status.get(s.value, 0)) for s in RunStatus],
        ),
        *_family(
            "merlin_tracking_physical_workers",
            "gauge",
            "Worker processes, by status (RUNNING: fresh heartbeat).",
            [({"status": s}, n) for s, n in workers_by_status.items()],
        ),
        *_family(
            "merlin_tracking_active_run_tasks",
            "gauge",
            "Task counters summed over the active runs (lost: lost now).",
            [({"counter": c}, n) for c, n in tasks.items()],
        ),
        *_family(
            "merlin_tracking_lost_tasks",
            "gauge",
            "Tasks of active runs lost with a dead worker and not redelivered.",
            [({}, tasks["lost"])],
        ),
        *_family(
            "merlin_tracking_runs_with_lost_tasks",
            "gauge",
            "Active runs holding lost tasks.",
            [({}, sum(1 for run in active if run.tasks_lost))],
        ),
        *_family(
            "merlin_tracking_uncovered_queues",
            "gauge",
            "Queues of active runs that no live worker consumes.",
            [({}, len(uncovered))],
        ),
        *_family(
            "merlin_tracking_heartbeat_age_seconds",
            "gauge",
            "Oldest heartbeat among the worker processes of a logical worker that are not STOPPED.",
            [({"logical_worker": name}, age) for name, age in sorted(ages.items())],
        ),
        *_family(
            "merlin_tracking_live_workers",
            "gauge",
            "Live (RUNNING) processes of a logical worker that is not STOPPED.",
            [({"logical_worker": name}, n) for name, n in sorted(live.items())],
        ),
        *_family(
            "merlin_tracking_scrape_duration_seconds",
            "gauge",
            "Seconds this scrape took to read the ledger.",
            [({}, round(time.perf_counter() - began, 6))],
        ),
    ]
    return "\n".join(lines) + "\n"
