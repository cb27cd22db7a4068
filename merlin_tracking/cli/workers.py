"""``workers list/show``: logical workers (name + queues) and physical workers (processes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import (
    is_alive,
    logical_document,
    newest_first,
    physical_document,
    run_documents,
)
from merlin_tracking.cli.errors import ExitCode, cli_error
from merlin_tracking.cli.options import examples, json_option
from merlin_tracking.cli.output import (
    Column,
    echo_json,
    echo_lines,
    format_age,
    format_time,
    plural,
    render_fields,
    render_table,
)
from merlin_tracking.cli.runs import runs_table
from merlin_tracking.cli.workers_drain import drain_workers
from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import WorkerNotFoundError
from merlin_tracking.records import LogicalWorker, PhysicalWorker


def logical_table(
    logical: Sequence[LogicalWorker], physical: Sequence[PhysicalWorker]
) -> list[str]:
    columns = (
        Column("ID"),
        Column("NAME", min_width=8),
        Column("QUEUES", min_width=8),
        Column("RUNS", align="right"),
        Column("LIVE", align="right"),
        Column("CREATED"),
    )
    rows = []
    for lw in logical:
        live = sum(1 for pw in physical if pw.logical_worker_id == lw.id and is_alive(pw))
        rows.append(
            (
                lw.id,
                lw.name,
                ",".join(lw.queues),
                str(len(lw.runs)),
                f"{live}/{len(lw.physical_workers)}",
                format_time(lw.created_at),
            )
        )
    return render_table(columns, rows)


def allocation_text(allocation: dict[str, Any]) -> str:
    """``slurm 1234 (sim), 2 live, ends 2026-05-01 12:00 UTC`` of an ``allocation_documents``
    entry."""
    name = f" ({allocation['job_name']})" if allocation["job_name"] else ""
    ends = allocation["job_ends_at"]
    when = f", ends {format_time(datetime.fromisoformat(ends))} UTC" if ends else ""
    return (
        f"{allocation['scheduler']} {allocation['job_id']}{name}, "
        f"{allocation['live_workers']} live{when}"
    )


def job_text(pw: PhysicalWorker) -> str:
    """``1234 (slurm) sim on node[1-4], ends 2026-05-01 12:00:00 UTC (in 2h)``, or ``-``."""
    if pw.job_id is None:
        return "-"
    parts = [f"{pw.job_id} ({pw.scheduler})"]
    if pw.job_name:
        parts.append(pw.job_name)
    if pw.job_nodes:
        parts.append(f"on {pw.job_nodes}")
    text = " ".join(parts)
    if pw.job_ends_at is not None:
        text += f", ends {format_time(pw.job_ends_at, seconds=True)} UTC"
    return text


def physical_table(physical: Sequence[PhysicalWorker]) -> list[str]:
    with_jobs = any(pw.job_id for pw in physical)  # the column only where it says something
    columns = (
        Column("ID"),
        Column("NAME", min_width=10),
        Column("STATUS"),
        Column("HOST", min_width=6),
        *((Column("JOB", min_width=6),) if with_jobs else ()),
        Column("PID", align="right"),
        Column("HEARTBEAT"),
    )
    rows = [
        (
            pw.id,
            pw.name,
            pw.status.value,
            pw.host or "-",
            *((pw.job_id or "-",) if with_jobs else ()),
            "-" if pw.pid is None else str(pw.pid),
            format_age(pw.heartbeat_timestamp),
        )
        for pw in physical
    ]
    return render_table(columns, rows)


@click.group(
    epilog=examples(
        "merlin-tracking workers list --physical --status stalled",
        "merlin-tracking workers show sim@node12",
    )
)
def workers() -> None:
    """List and show logical and physical workers; drain the workers of an allocation."""


workers.add_command(drain_workers)


@workers.command(
    "list",
    epilog=examples(
        "merlin-tracking workers list",
        "merlin-tracking workers list --logical --queue sim",
        "merlin-tracking workers list --status stalled --host node12 --json",
        "merlin-tracking workers list --job 123456",
    ),
)
@click.option("--logical", "kind", flag_value="logical", help="Only logical workers.")
@click.option("--physical", "kind", flag_value="physical", help="Only physical workers.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help="Physical workers in this status (repeatable): RUNNING, STALLED, STOPPED, REBOOTING. "
    "Implies --physical.",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="Physical workers on this host (repeatable). Implies --physical.",
)
@click.option(
    "--job",
    "jobs",
    multiple=True,
    metavar="JOB_ID",
    help="Physical workers of this batch job (repeatable; its id as the scheduler gives it). "
    "Implies --physical.",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="QUEUE",
    help="Workers consuming this queue (repeatable); physical workers through their logical one.",
)
@json_option
@pass_state
def list_workers(
    state: CliState,
    kind: str | None,
    statuses: tuple[str, ...],
    hosts: tuple[str, ...],
    jobs: tuple[str, ...],
    queues: tuple[str, ...],
    as_json: bool,
) -> None:
    """Logical and physical workers (both by default), oldest first."""
    if kind == "logical" and (statuses or hosts or jobs):
        raise click.UsageError("--status, --host and --job filter physical workers; drop --logical")
    if statuses or hosts or jobs:
        kind = "physical"
    db = state.db
    logical_filters: dict[str, Any] = {"queues": list(queues)} if queues else {}
    logical = db.logical_workers.get_all(logical_filters)
    physical_filters: dict[str, Any] = {}
    if statuses:
        physical_filters["status"] = list(statuses)
    if hosts:
        physical_filters["host"] = list(hosts)
    if jobs:
        physical_filters["job_id"] = list(jobs)
    if queues:
        physical_filters["logical_worker_id"] = [lw.id for lw in logical]
    physical = db.physical_workers.get_all(physical_filters)
    show_logical, show_physical = kind != "physical", kind != "logical"
    if as_json:
        echo_json(
            {
                "logical_workers": [logical_document(lw, physical) for lw in logical]
                if show_logical
                else None,
                "physical_workers": [physical_document(pw) for pw in physical]
                if show_physical
                else None,
            }
        )
        return
    if show_logical:
        click.echo(f"Logical workers ({len(logical)})")
        echo_lines(logical_table(logical, physical) if logical else ["  none"])
    if show_logical and show_physical:
        click.echo()
    if show_physical:
        click.echo(f"Physical workers ({len(physical)})")
        echo_lines(physical_table(physical) if physical else ["  none"])


def find_worker(db: TrackingDatabase, worker: str) -> PhysicalWorker | LogicalWorker:
    """A physical worker by id or node name, else a logical worker by id or (unique) name."""
    physical = db.physical_workers.find(worker)
    if physical is not None:
        return physical
    logical = db.logical_workers.find(worker)
    if logical is not None:
        return logical
    named = db.logical_workers.get_all({"name": worker})
    if len(named) > 1:
        choices = ", ".join(f"{lw.id} ({','.join(lw.queues)})" for lw in named)
        raise cli_error(
            f"{len(named)} logical workers are named {worker!r}; give an id: {choices}",
            ExitCode.USAGE,
        )
    if not named:
        raise WorkerNotFoundError(worker)
    return named[0]


def _show_physical(db: TrackingDatabase, pw: PhysicalWorker, as_json: bool) -> None:
    logical = db.logical_workers.find(pw.logical_worker_id)
    if as_json:
        echo_json(
            {
                "type": "physical_worker",
                "worker": physical_document(pw),
                "logical_worker": logical_document(logical, [pw]) if logical else None,
            }
        )
        return
    pairs: list[tuple[str, object]] = [
        ("Physical worker", pw.name),
        ("ID", pw.id),
        ("Status", f"{pw.status.value} ({'alive' if is_alive(pw) else 'not alive'})"),
        ("Host", pw.host or "-"),
        ("Job", job_text(pw)),
        ("PID", "-" if pw.pid is None else pw.pid),
        (
            "Logical worker",
            f"{logical.name} ({logical.id}) on {','.join(logical.queues)}" if logical else "-",
        ),
        (
            "Heartbeat",
            f"{format_time(pw.heartbeat_timestamp, seconds=True)} UTC "
            f"({format_age(pw.heartbeat_timestamp)})"
            if pw.heartbeat_timestamp
            else "-",
        ),
        ("Stale after", f"{pw.stale_after:g}s" if pw.stale_after else "never"),
        ("Started", format_time(pw.latest_start_time, seconds=True)),
        ("Restarts", pw.restart_count),
        ("Created", format_time(pw.created_at, seconds=True) + " UTC"),
        ("Command", pw.launch_cmd or "-"),
    ]
    echo_lines(render_fields(pairs))


def _show_logical(db: TrackingDatabase, lw: LogicalWorker, as_json: bool) -> None:
    physical = db.physical_workers.get_many(lw.physical_workers)
    runs = run_documents(db, newest_first(db.runs.get_many(lw.runs)))
    if as_json:
        echo_json(
            {
                "type": "logical_worker",
                "worker": logical_document(lw, physical),
                "physical_workers": [physical_document(pw) for pw in physical],
                "runs": runs,
            }
        )
        return
    live = sum(1 for pw in physical if is_alive(pw))
    pairs: list[tuple[str, object]] = [
        ("Logical worker", lw.name),
        ("ID", lw.id),
        ("Queues", ", ".join(lw.queues)),
        ("Created", format_time(lw.created_at, seconds=True) + " UTC"),
        ("Processes", f"{live} live of {len(physical)}"),
        ("Runs", plural(len(runs), "run")),
    ]
    echo_lines(render_fields(pairs))
    if physical:
        click.echo()
        echo_lines(physical_table(physical))
    if runs:
        click.echo()
        echo_lines(runs_table(runs))


@workers.command(
    "show",
    epilog=examples(
        "merlin-tracking workers show sim@node12",
        "merlin-tracking workers show sim --json",
    ),
)
@click.argument("worker", metavar="ID|NAME")
@json_option
@pass_state
def show_worker(state: CliState, worker: str, as_json: bool) -> None:
    """A physical worker (by id or node name) or a logical worker (by id or name)."""
    db = state.db
    found = find_worker(db, worker)
    if isinstance(found, PhysicalWorker):
        _show_physical(db, found, as_json)
    else:
        _show_logical(db, found, as_json)
