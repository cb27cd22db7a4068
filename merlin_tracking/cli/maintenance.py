"""``gc``, ``export`` and ``import``: tidy the ledger, move a run between ledgers."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

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
from merlin_tracking.cli.output import echo_fit, echo_json, plural
from merlin_tracking.cli.timespec import duration_option

GC_KINDS = (
    ("physical_workers", "physical worker"),
    ("logical_workers", "logical worker"),
    ("dangling", "dangling reference"),
)


def _gc_lines(found: dict[str, list[str]], names: dict[str, str]) -> list[str]:
    lines = []
    for key, label in GC_KINDS:
        for item in found.get(key, []):
            name = names.get(item)
            lines.append(f"{label}  {item}" + (f"  {name}" if name else ""))
    return lines


def _summary(found: dict[str, list[str]]) -> str:
    return ", ".join(plural(len(found.get(key, [])), label) for key, label in GC_KINDS)


@click.command(
    epilog=examples(
        "merlin-tracking gc --dry-run",
        "merlin-tracking gc --older-than 2h --yes",
        "merlin-tracking gc --older-than 7d --yes --json",
    )
)
@click.option(
    "--older-than",
    callback=duration_option,
    metavar="DURATION",
    default="1d",
    show_default=True,
    help="Remove physical workers stopped or stalled for longer than this (30m, 2h, 3d).",
)
@dry_run_option
@yes_option
@json_option
@pass_state
def gc(state: CliState, older_than: timedelta, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Remove physical workers stopped or stalled for longer than --older-than, logical workers
    with no runs and no physical workers, and dangling references; print what was removed (or,
    with --dry-run, what would be)."""
    db = state.db
    found = db.collect_garbage(older_than, dry_run=True)
    names = {pw.id: pw.name for pw in db.physical_workers.get_many(found["physical_workers"])}
    for lw in db.logical_workers.get_many(found["logical_workers"]):
        names[lw.id] = f"{lw.name} ({','.join(lw.queues)})"
    total = sum(len(found.get(key, [])) for key, _ in GC_KINDS)
    if total and not dry_run:
        confirm_or_refuse(f"remove {plural(total, 'item')}", yes, _gc_lines(found, names))
        found = db.collect_garbage(older_than, dry_run=False)
    if as_json:
        echo_json(
            {
                "dry_run": dry_run,
                "older_than_seconds": older_than.total_seconds(),
                **{key: list(found.get(key, [])) for key, _ in GC_KINDS},
            }
        )
        return
    if not total:
        click.echo("Nothing to collect.")
        return
    click.echo(f"{'Would remove' if dry_run else 'Removed'} {_summary(found)}:")
    for line in _gc_lines(found, names):
        echo_fit(f"  {line}")


@click.command(
    epilog=examples(
        "merlin-tracking export /scratch/studies/sweep_20240501 -o sweep.json",
        "merlin-tracking export r12 > run.json",
    )
)
@click.argument("run", metavar="RUN_ID|WORKSPACE")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True, path_type=Path),
    help="Write the document to this file instead of stdout.",
)
@json_option
@pass_state
def export(state: CliState, run: str, output: Path | None, as_json: bool) -> None:
    """Write a run with its study and workers as one JSON document (restore it with import).

    On stdout the document is the output (--json changes nothing); with -o FILE, --json prints
    {"run_id", "workspace", "file"}.
    """
    document = state.db.export_run(run)
    text = json.dumps(document, indent=2)
    if output is None or str(output) == "-":
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise cli_error(f"cannot write {output}: {exc.strerror or exc}", ExitCode.FAILED) from None
    run_doc = document["run"]
    if as_json:
        echo_json({"run_id": run_doc["id"], "workspace": run_doc["workspace"], "file": str(output)})
    else:
        click.echo(f"Exported run {run_doc['id']} ({run_doc['workspace']}) to {output}")


@click.command(
    "import",
    epilog=examples("merlin-tracking import sweep.json", "cat run.json | merlin-tracking import -"),
)
@click.argument(
    "file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
)
@json_option
@pass_state
def import_(state: CliState, file: Path, as_json: bool) -> None:
    """Restore a run written by export (FILE, or - for stdin), with its id, counters, study and
    workers. Fails (exit 1) if the run id or workspace already exists."""
    try:
        if str(file) == "-":
            text = sys.stdin.read()
        else:
            text = file.read_text(encoding="utf-8")
        document = json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise cli_error(f"cannot read {file}: {exc}", ExitCode.USAGE) from None
    except json.JSONDecodeError as exc:
        raise cli_error(f"{file} is not JSON: {exc}", ExitCode.USAGE) from None
    db = state.db
    try:
        run = db.import_run(document)
    except (TypeError, AttributeError, KeyError) as exc:  # malformed beyond the package's checks
        raise cli_error(
            f"{file}: not a valid merlin_tracking export: {exc}", ExitCode.USAGE
        ) from None
    if as_json:
        echo_json({"run": run_documents(db, [run])[0]})
    else:
        click.echo(f"Imported run {run.id} ({run.workspace})")


@click.command(
    epilog=examples(
        "merlin-tracking migrate", "merlin-tracking --url redis://host/0 migrate --json"
    )
)
@json_option
@pass_state
def migrate(state: CliState, as_json: bool) -> None:
    """Bring a ledger written by an older release to this release's format, in place: runs of
    older record versions upgraded, task ledgers given their index. Reads and writes do this
    as they meet such records; this does all of it now. Safe to run again (it then changes
    nothing) and while workers run."""
    done = state.db.migrate()
    if as_json:
        echo_json(done)
        return
    click.echo(
        f"{plural(done['runs'], 'run')} checked: {plural(done['runs_upgraded'], 'run')} "
        f"upgraded, {plural(done['ledgers_indexed'], 'task ledger')} indexed"
        + ("" if done["runs_upgraded"] or done["ledgers_indexed"] else "; nothing to do")
    )
