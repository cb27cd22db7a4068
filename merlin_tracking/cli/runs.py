"""``runs list/show/tasks/requeue/cancel/delete``: the ``runs`` group, and the runs table other commands
show.

The filters of ``list`` and ``delete --all`` are in ``run_selection.py``, ``show`` in
``run_show.py``, ``tasks`` in ``run_tasks.py``, ``requeue`` in ``run_requeue.py``, ``cancel`` in
``run_cancel.py`` (added to the group here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import run_documents
from merlin_tracking.cli.errors import ExitCode, cli_error
from merlin_tracking.cli.options import (
    confirm_or_refuse,
    dry_run_option,
    examples,
    json_option,
    yes_option,
)
from merlin_tracking.cli.output import (
    Column,
    echo_fit,
    echo_json,
    echo_lines,
    format_time,
    plural,
    render_table,
)
from merlin_tracking.cli.run_cancel import cancel_runs
from merlin_tracking.cli.run_requeue import requeue_run
from merlin_tracking.cli.run_selection import run_filter_options, selection
from merlin_tracking.cli.run_show import show_run
from merlin_tracking.cli.run_tasks import run_tasks
from merlin_tracking.records import RunStatus
from merlin_tracking.resolvers import PLAIN_WORK_UNTRACKED

RUN_COLUMNS = (
    Column("ID"),
    Column("STATUS"),
    Column("PROGRESS", align="right"),
    Column("STUDY", min_width=6),
    Column("CREATED"),
    Column("WORKSPACE", min_width=10, elide="start"),
)


#: Below ``runs list`` on a ledger without runs: where runs come from.
NO_RUNS_HINT = f"Runs come from launch_study and Merlin's tasks; {PLAIN_WORK_UNTRACKED}."

#: Marks the status of a settling run in tables; ``SETTLING_NOTE`` explains it below them.
SETTLING_MARK = "*"
SETTLING_NOTE = "* settling: tasks were counted at workers, so more may still arrive"


def progress_cell(document: Mapping[str, Any]) -> str:
    return f"{document['tasks_finished']}/{document['tasks_queued']}"


def status_cell(document: Mapping[str, Any]) -> str:
    """The status, with ``*`` while the run settles (``RUNNING*``)."""
    return str(document["status"]) + (SETTLING_MARK if document["settling"] else "")


def settling_note(documents: Sequence[Mapping[str, Any]]) -> list[str]:
    """The footnote of ``*`` when a run shown is settling."""
    return [SETTLING_NOTE] if any(doc["settling"] for doc in documents) else []


def stalled_count(documents: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for doc in documents if doc["status"] == RunStatus.STALLED.value)


def runs_table(documents: Sequence[Mapping[str, Any]], width: int | None = None) -> list[str]:
    """The runs table (ID, status, finished/queued, study, created, workspace), with the
    settling footnote when a run shown is settling."""
    rows = [
        (
            doc["id"],
            status_cell(doc),
            progress_cell(doc),
            doc["study_name"] or "-",
            format_time(datetime.fromisoformat(doc["created_at"])),
            doc["workspace"],
        )
        for doc in documents
    ]
    return [*render_table(RUN_COLUMNS, rows, width), *settling_note(documents)]


# ---------------------------------------------------------------------------- commands
@click.group(
    epilog=examples(
        "merlin-tracking runs list --status running --since 2h",
        "merlin-tracking runs show /scratch/studies/sweep_20240501",
        "merlin-tracking runs tasks r12 --state failed",
    )
)
def runs() -> None:
    """List, show, cancel and delete runs, and list the tasks of a run."""


@runs.command(
    "list",
    epilog=examples(
        "merlin-tracking runs list --study sweep --status running --status queued",
        "merlin-tracking runs list --queue sim --since 2024-05-01 --until 3d --json",
    ),
)
@run_filter_options
@json_option
@pass_state
def list_runs(state: CliState, /, as_json: bool, **options: Any) -> None:
    """Runs matching every filter given, newest first.

    A settling run's status is marked with * (tasks were counted at workers, so more may still
    arrive before it completes); the last line counts the runs and the STALLED ones.
    """
    db = state.settled_db()
    chosen = selection(**options)
    documents = run_documents(db, chosen.select(db))
    if as_json:
        echo_json({"count": len(documents), "runs": documents})
    elif not documents and chosen.given:
        click.echo("No runs match.")
    elif not documents:
        click.echo(f"No runs in {db.url} (prefix {state.resolve()[1]}).")
        click.echo(NO_RUNS_HINT)
    else:
        echo_lines(runs_table(documents))
        stalled = stalled_count(documents)
        click.echo(plural(len(documents), "run") + (f", {stalled} stalled" if stalled else ""))


runs.add_command(show_run)
runs.add_command(run_tasks)
runs.add_command(requeue_run)
runs.add_command(cancel_runs)


@runs.command(
    "delete",
    epilog=examples(
        "merlin-tracking runs delete r12 /scratch/old_run",
        "merlin-tracking runs delete --all --status failed --until 30d --dry-run",
        "merlin-tracking runs delete --all --study sweep --yes",
    ),
)
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID|WORKSPACE]...")
@click.option("--all", "all_", is_flag=True, help="Delete every run matching the filters.")
@run_filter_options
@dry_run_option
@yes_option
@json_option
@pass_state
def delete_runs(
    state: CliState,
    /,
    run_ids: tuple[str, ...],
    all_: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Delete the runs given, or with --all every run matching the filters (all runs when no
    filter is given). They leave their study and their workers."""
    chosen = selection(**options)
    if all_ and run_ids:
        raise click.UsageError("give run ids/workspaces or --all with filters, not both")
    if not all_ and not run_ids:
        raise click.UsageError("give the runs to delete, or --all [filters]")
    if chosen.given and not all_:
        raise click.UsageError("filters select runs only together with --all")
    db = state.db
    if all_:
        records = chosen.select(db)
        if not records:
            raise cli_error("no runs match: nothing to delete", ExitCode.FAILED)
    else:
        records = list({run.id: run for run in (db.runs.get(r) for r in run_ids)}.values())
    ids = [r.id for r in records]
    if not dry_run:
        confirm_or_refuse(
            f"delete {plural(len(records), 'run')}",
            yes,
            [f"{r.id}  {r.status.value}  {r.workspace}" for r in records],
        )
        db.runs.delete_many(ids)
    if as_json:
        echo_json({"dry_run": dry_run, "count": len(ids), "deleted": ids})
        return
    verb = "Would delete" if dry_run else "Deleted"
    for record in records:
        echo_fit(f"{verb} {record.id}  {record.workspace}")
    click.echo(f"{verb} {plural(len(records), 'run')}.")
