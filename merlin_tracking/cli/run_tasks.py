"""``runs tasks``: the task records of one run, and the task tables ``runs show`` also prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import task_document
from merlin_tracking.cli.options import examples, json_option
from merlin_tracking.cli.output import (
    Column,
    echo_fit,
    echo_json,
    echo_lines,
    format_seconds,
    plural,
    render_table,
)
from merlin_tracking.errors import InvalidRecordError
from merlin_tracking.records import Run, Task, TaskState

#: States whose ``error`` says what went wrong (the failure, or why the task was lost).
TROUBLED_STATES = frozenset({TaskState.FAILED, TaskState.LOST})

# Floors: the 7 columns and their gaps fit 80 (12 + 9 + 9 + 8 + 8 + 8 + 14 + 6 * 2); names keep
# their end (the task's own name), worker node names both ends (logical name and host).
TASK_COLUMNS = (
    Column("ID", min_width=12, elide="middle"),
    Column("NAME", min_width=9, elide="start"),
    Column("STATE"),
    Column("WORKER", min_width=8, elide="middle"),
    Column("ATTEMPTS", align="right"),
    Column("DURATION", align="right"),
)
ERROR_COLUMN = Column("ERROR", min_width=14)
# The error is what ``runs show`` lists these tasks for: it keeps the most room.
BRIEF_COLUMNS = (
    Column("ID", min_width=12, elide="middle"),
    Column("NAME", min_width=8, elide="start"),
    Column("WORKER", min_width=8, elide="middle"),
    Column("ERROR", min_width=30),
)


def tasks_table(tasks: Sequence[Task], width: int | None = None) -> list[str]:
    """ID, name, state, worker, attempts, duration; and the error column when a task shown
    failed or was lost (blank for the others)."""
    with_errors = any(task.state in TROUBLED_STATES for task in tasks)
    columns = (*TASK_COLUMNS, ERROR_COLUMN) if with_errors else TASK_COLUMNS
    rows = []
    for task in tasks:
        row = [
            task.id,
            task.name or "-",
            task.state.value,
            task.worker or "-",
            str(task.attempts),
            format_seconds(task.duration),
        ]
        if with_errors:
            row.append((task.error or "-") if task.state in TROUBLED_STATES else "")
        rows.append(row)
    return render_table(columns, rows, width)


def brief_tasks_table(tasks: Sequence[Task], width: int | None = None) -> list[str]:
    """ID, name, worker and error: failed or lost tasks in ``runs show``."""
    rows = [(t.id, t.name or "-", t.worker or "-", t.error or "-") for t in tasks]
    return render_table(BRIEF_COLUMNS, rows, width)


def _states(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    try:
        return [TaskState.parse(value).value for value in values]
    except InvalidRecordError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def records_dropped(run: Run, found: Sequence[Task]) -> bool:
    """True when ``run`` counted tasks but keeps no task record (``found``: all of them)."""
    return run.tasks_queued > 0 and not found


@click.command(
    "tasks",
    epilog=examples(
        "merlin-tracking runs tasks r12",
        "merlin-tracking runs tasks r12 --state failed --state lost",
        "merlin-tracking runs tasks /scratch/sweep_20240501 --worker sim@node7 --json",
        "merlin-tracking runs tasks r12 --name merlin.common.tasks.merlin_step",
    ),
)
@click.argument("run", metavar="RUN_ID|WORKSPACE")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    callback=_states,
    help="Tasks in this state (repeatable: any of them; case-insensitive): QUEUED, RECEIVED, "
    "STARTED, RETRY, SUCCEEDED, FAILED, REVOKED, LOST.",
)
@click.option(
    "--worker",
    metavar="NODE",
    help="Tasks last received or run by this worker (its Celery node name, e.g. sim@node7).",
)
@click.option("--name", metavar="TASK_NAME", help="Tasks with this (full) task name.")
@click.option("--queue", metavar="QUEUE", help="Tasks sent to this queue.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help="At most this many tasks (the oldest).",
)
@json_option
@pass_state
def run_tasks(
    state: CliState,
    run: str,
    states: list[str],
    worker: str | None,
    name: str | None,
    queue: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """The task records of a run matching every filter given, oldest first: state, worker,
    attempts, duration, and the error of each failed or lost task.

    A completed run whose task records were dropped (tracking_task_retention) lists none here,
    but keeps its counters (runs show).
    """
    db = state.settled_db()
    record = db.runs.get(run)
    filters: dict[str, Any] = {"run_id": record.id}
    if states:
        filters["state"] = states
    for key, value in (("worker", worker), ("name", name), ("queue", queue)):
        if value is not None:
            filters[key] = value
    matching = db.tasks.get_all(filters)
    shown = matching if limit is None else matching[:limit]
    if as_json:
        echo_json(
            {
                "run_id": record.id,
                "count": len(shown),
                "tasks": [task_document(task) for task in shown],
            }
        )
        return
    if not shown:
        click.echo("No tasks match.")
        everything = matching if len(filters) == 1 else db.tasks.get_all({"run_id": record.id})
        if records_dropped(record, everything):
            counted = plural(record.tasks_queued, "task")
            echo_fit(f"Run {record.id} counted {counted}, but its task records were dropped")
            echo_fit(f"(task retention); its counters stay: merlin-tracking runs show {record.id}")
        return
    echo_lines(tasks_table(shown))
    total = plural(len(shown), "task")
    click.echo(total if len(shown) == len(matching) else f"{total} of {len(matching)} matching")
