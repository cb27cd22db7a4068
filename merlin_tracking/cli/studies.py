"""``studies list/show/delete``."""

from __future__ import annotations

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import newest_first, run_documents, study_document
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
    render_fields,
    render_table,
)
from merlin_tracking.cli.runs import runs_table
from merlin_tracking.records import Study


@click.group(
    epilog=examples(
        "merlin-tracking studies list",
        "merlin-tracking studies show sweep",
        "merlin-tracking studies delete sweep --keep-runs --yes",
    )
)
def studies() -> None:
    """List, show and delete studies."""


@studies.command(
    "list",
    epilog=examples(
        "merlin-tracking studies list", "merlin-tracking studies list --limit 5 --json"
    ),
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help="At most this many studies (newest first).",
)
@json_option
@pass_state
def list_studies(state: CliState, limit: int | None, as_json: bool) -> None:
    """Studies, newest first, with their number of runs."""
    records = sorted(state.db.studies.get_all(), key=lambda s: (s.created_at, s.id), reverse=True)
    if limit is not None:
        records = records[:limit]
    if as_json:
        echo_json({"count": len(records), "studies": [study_document(s) for s in records]})
        return
    if not records:
        click.echo("No studies.")
        return
    columns = (
        Column("ID"),
        Column("NAME", min_width=10),
        Column("RUNS", align="right"),
        Column("CREATED"),
    )
    rows = [(s.id, s.name, str(len(s.runs)), format_time(s.created_at)) for s in records]
    echo_lines(render_table(columns, rows))
    click.echo(plural(len(records), "study", "studies"))


@studies.command(
    "show",
    epilog=examples(
        "merlin-tracking studies show sweep", "merlin-tracking studies show 0k3m9x2b7c1d --json"
    ),
)
@click.argument("study", metavar="NAME|ID")
@json_option
@pass_state
def show_study(state: CliState, study: str, as_json: bool) -> None:
    """A study and its runs, newest first."""
    db = state.db
    record = db.studies.get(study)
    runs = run_documents(db, newest_first(db.runs.get_many(record.runs)))
    if as_json:
        echo_json({"study": study_document(record), "runs": runs})
        return
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run["status"]] = by_status.get(run["status"], 0) + 1
    echo_lines(
        render_fields(
            [
                ("Study", record.name),
                ("ID", record.id),
                ("Created", format_time(record.created_at, seconds=True) + " UTC"),
                (
                    "Runs",
                    plural(len(runs), "run")
                    + (
                        " (" + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) + ")"
                        if by_status
                        else ""
                    ),
                ),
            ]
        )
    )
    if runs:
        click.echo()
        echo_lines(runs_table(runs))


@studies.command(
    "delete",
    epilog=examples(
        "merlin-tracking studies delete sweep --dry-run",
        "merlin-tracking studies delete sweep old_sweep --yes",
        "merlin-tracking studies delete sweep --keep-runs --yes",
    ),
)
@click.argument("names", nargs=-1, required=True, metavar="NAME|ID...")
@click.option(
    "--keep-runs",
    is_flag=True,
    help="Keep the studies' runs, detached (their study_id becomes null).",
)
@dry_run_option
@yes_option
@json_option
@pass_state
def delete_studies(
    state: CliState,
    names: tuple[str, ...],
    keep_runs: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete studies and, unless --keep-runs, all their runs."""
    db = state.db
    records: list[Study] = list({s.id: s for s in (db.studies.get(n) for n in names)}.values())
    run_ids = sorted(run_id for s in records for run_id in s.runs)
    what = plural(len(records), "study", "studies")
    if run_ids:
        what += (
            f" (keeping {plural(len(run_ids), 'run')})"
            if keep_runs
            else f" and {plural(len(run_ids), 'run')}"
        )
    if not dry_run:
        confirm_or_refuse(
            f"delete {what}",
            yes,
            [f"{s.id}  {s.name}  ({plural(len(s.runs), 'run')})" for s in records],
        )
        for record in records:
            db.studies.delete(record.id, remove_associated_runs=not keep_runs)
    if as_json:
        echo_json(
            {
                "dry_run": dry_run,
                "deleted": [s.id for s in records],
                "deleted_runs": [] if keep_runs else run_ids,
                "detached_runs": run_ids if keep_runs else [],
            }
        )
        return
    verb = "Would delete" if dry_run else "Deleted"
    for record in records:
        echo_fit(f"{verb} study {record.id}  {record.name}")
    echo_fit(f"{verb} {what}.")
