"""``workers drain --job ID | --worker NAME``: live workers stop taking new tasks
(``merlin_tracking.drain``), so an allocation about to end finishes the tasks it runs."""

from __future__ import annotations

import click

from merlin_tracking.cancel import broker_app
from merlin_tracking.cli.broker import broker_of, broker_option, no_broker
from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.errors import ExitCode, cli_error
from merlin_tracking.cli.options import (
    confirm_or_refuse,
    dry_run_option,
    examples,
    json_option,
    yes_option,
)
from merlin_tracking.cli.output import echo_fit, echo_json, plural
from merlin_tracking.drain import DrainReport, drain, targets
from merlin_tracking.urls import mask_url


def _document(report: DrainReport) -> dict[str, object]:
    return {
        "dry_run": report.dry_run,
        "workers": [
            {"name": t.node, "job_id": t.job_id, "queues": list(t.queues)} for t in report.targets
        ],
        "drained": list(report.drained),
        "silent": list(report.silent),
    }


def _lines(report: DrainReport) -> list[str]:
    verb = "Would drain" if report.dry_run else "Drained"
    lines = []
    for target in report.targets:
        if report.dry_run or target.node in report.drained:
            lines.append(f"{verb} {target.node} (no longer consuming {','.join(target.queues)})")
        else:
            lines.append(f"No answer from {target.node}: it may be gone, or not listening")
    done = len(report.targets) if report.dry_run else len(report.drained)
    lines.append(f"{verb} {plural(done, 'worker')}; their running tasks go on.")
    return lines


@click.command(
    "drain",
    epilog=examples(
        "merlin-tracking workers drain --job 123456 --dry-run",
        "merlin-tracking workers drain --job 123456 --broker redis://host/0 --yes",
        "celery -A myproject tracking workers drain --worker sim@node12 --yes",
    ),
)
@click.option(
    "--job",
    "jobs",
    multiple=True,
    metavar="JOB_ID",
    help="Drain the live workers of this batch job (repeatable).",
)
@click.option(
    "--worker",
    "names",
    multiple=True,
    metavar="ID|NAME",
    help="Drain this physical worker (id or node name; repeatable).",
)
@broker_option("send the cancel_consumer commands through")
@dry_run_option
@yes_option
@json_option
@pass_state
def drain_workers(
    state: CliState,
    jobs: tuple[str, ...],
    names: tuple[str, ...],
    broker: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Stop live workers taking new tasks (Celery's cancel_consumer for each of their queues,
    sent to those workers only): the tasks they run finish, new ones go to other workers or
    wait in their queues. For an allocation about to end."""
    if not jobs and not names:
        raise click.UsageError("give --job JOB_ID or --worker NAME (repeatable)")
    chosen = targets(state.db, jobs, names)
    if not chosen:
        raise cli_error("no live worker matches", ExitCode.FAILED)
    report = DrainReport(True, tuple(chosen))
    if not dry_run:
        url, options = broker_of(state, broker)
        if url is None:
            raise no_broker("workers drain", "reach the workers through")
        confirm_or_refuse(
            f"stop {plural(len(chosen), 'worker')} consuming new tasks through {mask_url(url)}",
            yes,
            [t.node for t in chosen],
        )
        app = broker_app(url, options)
        try:
            report = drain(app, chosen)
        finally:
            app.close()
    if as_json:
        echo_json(_document(report))
    else:
        for line in _lines(report):
            echo_fit(line)
    if report.silent:
        raise SystemExit(int(ExitCode.FAILED))
