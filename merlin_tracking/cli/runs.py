"""``runs list/show/cancel/delete``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import (
    is_alive,
    logical_document,
    physical_document,
    run_document,
    run_documents,
    study_document,
)
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
    format_age,
    format_duration,
    format_time,
    plural,
    render_fields,
    render_table,
    utcnow,
)
from merlin_tracking.cli.timespec import moment_option
from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import InvalidFilterError, WorkerNotFoundError
from merlin_tracking.managers import InvalidPeriodError, RunQuery
from merlin_tracking.records import LogicalWorker, PhysicalWorker, Run, RunStatus
from merlin_tracking.records.status import TERMINAL_RUN_STATUSES

F = TypeVar("F", bound=Callable[..., Any])

RUN_COLUMNS = (
    Column("ID"),
    Column("STATUS"),
    Column("PROGRESS", align="right"),
    Column("STUDY", min_width=6),
    Column("CREATED"),
    Column("WORKSPACE", min_width=10, elide="start"),
)


def progress_cell(document: Mapping[str, Any]) -> str:
    return f"{document['tasks_finished']}/{document['tasks_queued']}"


def runs_table(documents: Sequence[Mapping[str, Any]], width: int | None = None) -> list[str]:
    """The runs table (ID, status, finished/queued, study, created, workspace)."""
    rows = [
        (
            doc["id"],
            doc["status"],
            progress_cell(doc),
            doc["study_name"] or "-",
            format_time(datetime.fromisoformat(doc["created_at"])),
            doc["workspace"],
        )
        for doc in documents
    ]
    return render_table(RUN_COLUMNS, rows, width)


# ---------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class RunSelection:
    """The run filters of ``runs list`` and ``runs delete --all``, as given on the command line."""

    study: str | None = None
    statuses: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    worker: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None

    @property
    def given(self) -> bool:
        return any(
            (self.study, self.statuses, self.queues, self.worker, self.since, self.until)
        ) or (self.limit is not None)

    def select(self, db: TrackingDatabase) -> list[Run]:
        """Matching runs, newest first. Unknown study/worker: not found; bad values: invalid."""
        try:  # the time window is checked first, before any lookup
            query = RunQuery(
                statuses=self.statuses or None,
                queues=self.queues or None,
                since=self.since,
                until=self.until,
                limit=self.limit,
            )
        except InvalidPeriodError as exc:
            raise InvalidFilterError(
                f"--since ({exc.since.isoformat()}) is after --until ({exc.until.isoformat()})"
            ) from None
        if self.study:
            query = replace(query, study_id=db.studies.get(self.study).id)
        if self.worker:
            query = replace(query, workers=logical_worker_ids(db, self.worker))
        return db.runs.query(query)


def logical_worker_ids(db: TrackingDatabase, worker: str) -> tuple[str, ...]:
    """Logical worker ids meant by ``worker``: a logical worker id or name, or a physical
    worker id or node name (its logical worker). ``WorkerNotFoundError`` if none."""
    logical = db.logical_workers.find(worker)
    if logical is not None:
        return (logical.id,)
    named = db.logical_workers.get_all({"name": worker})
    if named:
        return tuple(lw.id for lw in named)
    physical = db.physical_workers.find(worker)
    if physical is None:
        raise WorkerNotFoundError(worker)
    return (physical.logical_worker_id,) if physical.logical_worker_id else ()


def run_filter_options(func: F) -> F:
    """The filter options of ``runs list`` (also used by ``runs delete --all``)."""
    decorators = [
        click.option("--study", metavar="NAME|ID", help="Runs of this study."),
        click.option(
            "--status",
            "statuses",
            multiple=True,
            metavar="STATUS",
            help="Runs in this status (repeatable: any of them): INITIALIZED, QUEUED, RUNNING, "
            "COMPLETED, CANCELLED, FAILED.",
        ),
        click.option(
            "--queue",
            "queues",
            multiple=True,
            metavar="QUEUE",
            help="Runs using this queue (repeatable: any of them).",
        ),
        click.option(
            "--worker",
            metavar="ID|NAME",
            help="Runs served by this worker (logical id or name, physical id or node name).",
        ),
        click.option(
            "--since",
            callback=moment_option,
            metavar="TIME",
            help="Created at or after: ISO time, or a duration ago (2h, 3d).",
        ),
        click.option(
            "--until",
            callback=moment_option,
            metavar="TIME",
            help="Created at or before: ISO time, or a duration ago (2h, 3d).",
        ),
        click.option(
            "--limit",
            type=click.IntRange(min=0),
            metavar="N",
            help="At most this many runs (newest first).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def selection(**options: Any) -> RunSelection:
    return RunSelection(
        study=options["study"],
        statuses=tuple(options["statuses"]),
        queues=tuple(options["queues"]),
        worker=options["worker"],
        since=options["since"],
        until=options["until"],
        limit=options["limit"],
    )


# ---------------------------------------------------------------------------- commands
@click.group(
    epilog=examples(
        "merlin-tracking runs list --status running --since 2h",
        "merlin-tracking runs show /scratch/studies/sweep_20240501",
    )
)
def runs() -> None:
    """List, show, cancel and delete runs."""


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
    """Runs matching every filter given, newest first."""
    db = state.settled_db()
    documents = run_documents(db, selection(**options).select(db))
    if as_json:
        echo_json({"count": len(documents), "runs": documents})
    elif not documents:
        click.echo("No runs match.")
    else:
        echo_lines(runs_table(documents))
        click.echo(plural(len(documents), "run"))


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


@runs.command(
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
    """A run with its counters, queues, workers (and whether each is alive) and timings."""
    details = state.settled_db().run_details(run)
    record, study = details.run, details.study
    logical, physical = details.logical_workers, details.physical_workers
    document = run_document(record, study.name if study else None)
    if as_json:
        echo_json(
            {
                "run": document,
                "study": study_document(study) if study else None,
                "logical_workers": [logical_document(lw, physical) for lw in logical],
                "physical_workers": [physical_document(pw) for pw in physical],
            }
        )
        return
    counters = record.counters
    share = document["progress"]
    pairs: list[tuple[str, object]] = [
        ("Run", record.id),
        ("Workspace", record.workspace),
        ("Study", f"{study.name} ({study.id})" if study else "-"),
        ("Status", record.status.value),
        (
            "Progress",
            f"{record.tasks_finished}/{record.tasks_queued} tasks finished"
            + (f" ({share:.0%})" if share is not None else ""),
        ),
        ("Tasks", ", ".join(f"{name} {n}" for name, n in counters.items())),
        ("Queues", ", ".join(record.queues) or "-"),
        ("Created", format_time(record.created_at, seconds=True) + " UTC"),
        ("Updated", format_time(record.updated_at, seconds=True) + " UTC"),
        (
            "Elapsed",
            format_duration(document["elapsed_seconds"]) + (" so far" if record.is_active else ""),
        ),
    ]
    if record.publishing:
        pairs.append(("Publishing", plural(record.publishing, "launch", "launches") + " running"))
    if record.is_active and record.settle_until is not None and record.settle_until > utcnow():
        until = format_time(record.settle_until, seconds=True)
        pairs.append(("Settling", f"more tasks may still arrive until {until} UTC"))
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
    if logical:
        click.echo("Workers")
        echo_lines(_workers_table(logical, physical))
    else:
        click.echo("Workers   none attached")


@runs.command(
    "cancel",
    epilog=examples(
        "merlin-tracking runs cancel r12",
        "merlin-tracking runs cancel /scratch/studies/sweep_20240501 --yes",
    ),
)
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID|WORKSPACE...")
@dry_run_option
@yes_option
@json_option
@pass_state
def cancel_runs(
    state: CliState, run_ids: tuple[str, ...], dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Mark runs CANCELLED; they stay so whatever their tasks report afterwards.

    Every run must exist and be active (or already cancelled), else nothing is changed.
    """
    db = state.db
    records = list({run.id: run for run in (db.runs.get(r) for r in run_ids)}.values())
    finished = [r for r in records if r.status in TERMINAL_RUN_STATUSES - {RunStatus.CANCELLED}]
    if finished:
        listing = ", ".join(f"{r.id} ({r.status.value})" for r in finished)
        raise cli_error(f"cannot cancel finished runs: {listing}", ExitCode.FAILED)
    targets = [r for r in records if r.status is not RunStatus.CANCELLED]
    already = [r.id for r in records if r.status is RunStatus.CANCELLED]
    if targets and not dry_run:
        confirm_or_refuse(
            f"cancel {plural(len(targets), 'run')}",
            yes,
            [f"{r.id}  {r.status.value}  {r.workspace}" for r in targets],
        )
        for record in targets:
            db.runs.cancel(record.id)
    if as_json:
        echo_json(
            {"dry_run": dry_run, "cancelled": [r.id for r in targets], "already_cancelled": already}
        )
        return
    verb = "Would cancel" if dry_run else "Cancelled"
    for record in targets:
        echo_fit(f"{verb} {record.id}  {record.workspace}")
    for run_id in already:
        click.echo(f"Already cancelled {run_id}")


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
