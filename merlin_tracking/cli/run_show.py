"""``runs show``: one run with its counters, queues, workers and timings, its failed and lost
tasks, and why it is STALLED when it is."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import (
    is_alive,
    logical_document,
    physical_document,
    run_document,
    study_document,
    task_document,
)
from merlin_tracking.cli.options import examples, json_option
from merlin_tracking.cli.output import (
    Column,
    Wrap,
    echo_json,
    echo_lines,
    fit,
    format_age,
    format_seconds,
    format_time,
    plural,
    render_fields,
    render_table,
)
from merlin_tracking.cli.run_tasks import brief_tasks_table
from merlin_tracking.database import RunDetails, TrackingDatabase
from merlin_tracking.records import LogicalWorker, PhysicalWorker, Run, RunStatus, Task, TaskState

#: Failed and lost tasks listed: by the text output (each kind), and by the JSON document.
SHOWN_TASKS = 5
JSON_TASKS = 20
WAITING_STATES = frozenset({TaskState.QUEUED, TaskState.RETRY})


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _workers_table(
    logical: Sequence[LogicalWorker], physical: Sequence[PhysicalWorker]
) -> list[str]:
    columns = (
        Column("LOGICAL", min_width=6),
        Column("QUEUES", min_width=6),
        Column("PROCESS", min_width=8),
        Column("ALIVE"),
        Column("STATUS"),
        Column("HEARTBEAT"),
    )
    rows: list[tuple[str, ...]] = []
    for lw in logical:
        processes = [pw for pw in physical if pw.logical_worker_id == lw.id]
        queues = ",".join(lw.queues)
        if not processes:
            rows.append((lw.name, queues, "-", "no", "-", "-"))
        for pw in processes:
            rows.append(
                (
                    lw.name,
                    queues,
                    pw.name,
                    "yes" if is_alive(pw) else "no",
                    pw.status.value,
                    format_age(pw.heartbeat_timestamp),
                )
            )
    return render_table(columns, rows)


def _moment(moment: datetime | None) -> str:
    return format_time(moment, seconds=True) + " UTC" if moment is not None else "-"


@dataclass(frozen=True)
class TaskTrouble:
    """What went wrong in a run, from its task records: failed and lost tasks (oldest first)
    and, for a STALLED run, the causes (one phrase each)."""

    failed: list[Task]
    lost: list[Task]
    stalled: list[str]


def live_queues(db: TrackingDatabase) -> set[str]:
    """Queues consumed by the logical worker of a live (RUNNING) physical worker."""
    running = db.physical_workers.get_all({"status": "running"})
    ids = sorted({pw.logical_worker_id for pw in running if pw.logical_worker_id})
    return {queue for lw in db.logical_workers.get_many(ids) for queue in lw.queues}


def stalled_causes(db: TrackingDatabase, tasks: Sequence[Task]) -> list[str]:
    """Why a STALLED run cannot progress: its tasks lost with dead workers, and its waiting
    (queued or retrying) tasks on queues no live worker consumes."""
    causes = []
    lost = [task for task in tasks if task.state is TaskState.LOST]
    if lost:
        workers = sorted({task.worker for task in lost if task.worker})
        whom = {0: "dead workers", 1: f"dead worker {workers[0]}"}.get(
            len(workers), f"{len(workers)} dead workers"
        )
        causes.append(f"{plural(len(lost), 'task')} lost with {whom}")
    waiting = Counter(t.queue for t in tasks if t.state in WAITING_STATES and t.queue)
    consumed = live_queues(db) if waiting else set()
    orphaned = sorted(
        ((queue, n) for queue, n in waiting.items() if queue not in consumed),
        key=lambda item: (-item[1], item[0]),
    )
    if len(orphaned) == 1:
        queue, n = orphaned[0]
        causes.append(f"{n} waiting on queue {queue}, which no live worker consumes")
    elif orphaned:
        listing = ", ".join(f"{queue} ({n})" for queue, n in orphaned)
        total = sum(n for _, n in orphaned)
        causes.append(f"{total} waiting on queues {listing}, which no live worker consumes")
    if not causes:  # e.g. its task records were dropped, or a worker came back meanwhile
        causes.append("nothing in flight, and no live worker consumes its waiting tasks' queues")
    return causes


def task_trouble(db: TrackingDatabase, run: Run) -> TaskTrouble:
    """The run's task records are read only when its counters or status say there is trouble."""
    stalled = run.status is RunStatus.STALLED
    if not (run.tasks_failed or run.tasks_lost or stalled):
        return TaskTrouble([], [], [])
    tasks = db.tasks.get_all({"run_id": run.id})
    return TaskTrouble(
        failed=[task for task in tasks if task.state is TaskState.FAILED],
        lost=[task for task in tasks if task.state is TaskState.LOST],
        stalled=stalled_causes(db, tasks) if stalled else [],
    )


def _task_section(state: TaskState, tasks: Sequence[Task], counted: int, run: Run) -> list[str]:
    """``Failed tasks (N)`` (or lost) and the first ``SHOWN_TASKS`` of ``tasks``, then a blank
    line; nothing when the run has none. ``counted``: the run's counter, for dropped records."""
    title = f"{state.value.capitalize()} tasks"
    if not tasks:
        if not counted:
            return []
        return [f"{title} ({counted})", "  no task records kept (dropped by task retention)", ""]
    lines = [f"{title} ({len(tasks)})", *brief_tasks_table(tasks[:SHOWN_TASKS])]
    if len(tasks) > SHOWN_TASKS:
        more = len(tasks) - SHOWN_TASKS
        hint = f"merlin-tracking runs tasks {run.id} --state {state.value.lower()}"
        lines.append(fit(f"… and {more} more: {hint}"))
    return [*lines, ""]


def show_document(details: RunDetails, trouble: TaskTrouble) -> dict[str, Any]:
    """The ``runs show --json`` document; the web API serves the same one."""
    study, physical = details.study, details.physical_workers
    return {
        "run": run_document(details.run, study.name if study else None),
        "study": study_document(study) if study else None,
        "logical_workers": [logical_document(lw, physical) for lw in details.logical_workers],
        "physical_workers": [physical_document(pw) for pw in physical],
        "failed_tasks": [task_document(t) for t in trouble.failed[:JSON_TASKS]],
        "lost_tasks": [task_document(t) for t in trouble.lost[:JSON_TASKS]],
        "stalled_reason": "; ".join(trouble.stalled) or None,
    }


@click.command(
    "show",
    epilog=examples(
        "merlin-tracking runs show r12",
        "merlin-tracking runs show /scratch/studies/sweep_20240501 --json",
    ),
)
@click.argument("run", metavar="RUN_ID|WORKSPACE")
@json_option
@pass_state
def show_run(state: CliState, run: str, as_json: bool) -> None:
    """A run with its counters, queues, workers (and whether each is alive) and timings, its
    failed and lost tasks (with their errors), and for a STALLED run why nothing progresses."""
    db = state.settled_db()
    details = db.run_details(run)
    record, study = details.run, details.study
    logical, physical = details.logical_workers, details.physical_workers
    trouble = task_trouble(db, record)
    document = run_document(record, study.name if study else None)
    if as_json:
        echo_json(show_document(details, trouble))
        return
    counters = record.counters
    share = document["progress"]
    pairs: list[tuple[str, object]] = [
        ("Run", record.id),
        ("Workspace", record.workspace),
        ("Study", f"{study.name} ({study.id})" if study else "-"),
        ("Status", record.status.value),
    ]
    if trouble.stalled:
        pairs.append(("Stalled", Wrap(trouble.stalled, "; ")))
    pairs += [
        (
            "Progress",
            f"{record.tasks_finished}/{record.tasks_queued} tasks finished"
            + (f" ({share:.0%})" if share is not None else ""),
        ),
        ("Tasks", Wrap([f"{name} {n}" for name, n in counters.items()])),
        ("Queues", Wrap(record.queues) if record.queues else "-"),
        ("Created", _moment(record.created_at)),
        ("Updated", _moment(record.updated_at)),
        ("Started", _moment(record.started_at)),
        ("Finished", _moment(record.finished_at)),
        (
            "Duration",
            format_seconds(document["elapsed_seconds"]) + (" so far" if record.is_active else ""),
        ),
    ]
    if record.publishing:
        pairs.append(("Publishing", plural(record.publishing, "launch", "launches") + " running"))
    if document["settling"] and record.settle_until is not None:
        pairs.append(
            ("Settling", f"more tasks may still arrive until {_moment(record.settle_until)}")
        )
    if record.recovered_at is not None:
        since = f"at {_moment(record.recovered_at)}:"
        pairs.append(
            (
                "Recovered",
                Wrap(
                    ["its record vanished and was created again", since, "counts from then on"], " "
                ),
            )
        )
    optional = {
        "Parent": record.parent,
        "Child": record.child,
        "Parameters": _json_text(record.parameters) if record.parameters else None,
        "Samples": _json_text(record.samples) if record.samples is not None else None,
        "Extra": _json_text(record.additional_data) if record.additional_data else None,
    }
    pairs.extend((label, value) for label, value in optional.items() if value is not None)
    echo_lines(render_fields(pairs))
    click.echo()
    echo_lines(_task_section(TaskState.FAILED, trouble.failed, record.tasks_failed, record))
    echo_lines(_task_section(TaskState.LOST, trouble.lost, record.tasks_lost, record))
    if logical:
        click.echo("Workers")
        echo_lines(_workers_table(logical, physical))
    else:
        click.echo("Workers   none attached")
