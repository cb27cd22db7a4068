"""``runs cancel RUN...``: mark runs CANCELLED and stop their work (``merlin_tracking.cancel``).

The ledger is marked first, so the runs are final whatever their tasks report; then the tasks
the ledger holds as waiting (queued, received, retrying, lost) are revoked by id on every live
worker, and with ``--terminate`` the running ones too (SIGTERM). Revoking needs the broker:
``--broker``, else ``$CELERY_BROKER_URL``, else the app of ``celery -A APP tracking``.
``--no-revoke`` only marks the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from merlin_tracking.cancel import (
    REPLY_TIMEOUT,
    RevokeReport,
    RunWork,
    broker_app,
    revoke,
    task_ids_to_revoke,
    unfinished_work,
)
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
from merlin_tracking.errors import BrokerUnavailableError
from merlin_tracking.records import Run, RunStatus
from merlin_tracking.records.status import TERMINAL_RUN_STATUSES

#: How a run's unfinished tasks were handled, in the output.
COUNTS = ("revoked", "terminated", "running", "waiting")


def _counts(work: RunWork, revoking: bool, terminate: bool) -> dict[str, int]:
    """How the run's unfinished tasks were handled: revoked (not started), terminated
    (running, signalled), and left to run (running, and waiting ones with --no-revoke)."""
    running = len(work.running)
    return {
        "revoked": len(work.waiting) if revoking else 0,
        "terminated": running if revoking and terminate else 0,
        "running": 0 if revoking and terminate else running,
        "waiting": 0 if revoking else len(work.waiting),
    }


def _summary(run_id: str, counts: dict[str, int], revoking: bool, dry_run: bool) -> str:
    """One line per run: "  r1: 35 waiting tasks revoked, 2 running tasks left to finish"."""
    if not revoking:
        left = f"{plural(counts['waiting'], 'waiting task')}, "
        return f"  {run_id}: not revoked (--no-revoke): {left}" + plural(
            counts["running"], "running task"
        )
    would = "would be " if dry_run else ""
    parts = [f"{plural(counts['revoked'], 'waiting task')} {would}revoked"]
    if counts["terminated"]:
        parts.append(f"{plural(counts['terminated'], 'running task')} {would}sent SIGTERM")
    if counts["running"]:
        parts.append(f"{plural(counts['running'], 'running task')} left to finish")
    return f"  {run_id}: " + ", ".join(parts)


def _warnings(report: RevokeReport | None) -> list[str]:
    """What the workers replied instead of acknowledging, or that none acknowledged."""
    if report is None:
        return []
    lines = [f"Warning: worker {node} answered: {error}" for node, error in report.errors]
    if not report.answered:
        lines.append(
            f"Warning: no worker acknowledged the revoke within {REPLY_TIMEOUT:g} s. A worker "
            "busy under the solo pool reads it after its current task; a worker that starts "
            "later never learns it and would run the tasks still queued (run `runs cancel` "
            "again once workers run)."
        )
    return lines


def _send(
    state: CliState, url: str, options: dict[str, Any], ids: Sequence[str], terminate: bool
) -> RevokeReport:
    """Revoke through the app of ``celery -A APP tracking`` when it is on ``url`` (its control
    settings apply), else through a bare app on ``url``."""
    app = state.app
    if app is not None and url == app.conf.broker_url:
        return revoke(app, ids, terminate)
    bare = broker_app(url, options)
    try:
        return revoke(bare, ids, terminate)
    finally:
        bare.close()


def _sent(
    state: CliState,
    url: str,
    options: dict[str, Any],
    ids: Sequence[str],
    terminate: bool,
    cancelled: Sequence[Run],
) -> RevokeReport:
    """``_send``; a broker out of reach says what was done already, and how to finish."""
    try:
        return _send(state, url, options, ids, terminate)
    except BrokerUnavailableError as exc:
        done = (
            f"cancelled {', '.join(r.id for r in cancelled)} in the ledger, but "
            if cancelled
            else ""
        )
        raise cli_error(
            f"{done}revoked no task: {exc} (run `runs cancel` again to revoke them)",
            ExitCode.UNAVAILABLE,
        ) from None


@click.command(
    "cancel",
    epilog=examples(
        "merlin-tracking runs cancel r12 --broker redis://host:6379/0",
        "merlin-tracking runs cancel r12 --terminate --yes",
        "merlin-tracking runs cancel /scratch/studies/sweep --no-revoke --yes",
        "celery -A myproject tracking runs cancel r12 --yes",
    ),
)
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID|WORKSPACE...")
@click.option(
    "--terminate",
    is_flag=True,
    help="Also stop the running tasks: SIGTERM to their pool process under prefork (eventlet "
    "and gevent kill the green thread; under solo and threads they finish).",
)
@click.option(
    "--no-revoke",
    is_flag=True,
    help="Only mark the ledger: the runs' tasks still run.",
)
@broker_option("revoke the tasks through")
@dry_run_option
@yes_option
@json_option
@pass_state
def cancel_runs(
    state: CliState,
    run_ids: tuple[str, ...],
    terminate: bool,
    no_revoke: bool,
    broker: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Mark runs CANCELLED (they stay so whatever their tasks report afterwards) and revoke
    their tasks that have not started, so that no worker runs them; --terminate also stops the
    running ones. Cancelling a cancelled run revokes what is left of it.

    Every run must exist and be active (or already cancelled), else nothing is changed.
    """
    if terminate and no_revoke:
        raise click.UsageError("--terminate needs revoking: drop --no-revoke")
    db = state.db
    records = list({run.id: run for run in (db.runs.get(r) for r in run_ids)}.values())
    finished = [r for r in records if r.status in TERMINAL_RUN_STATUSES - {RunStatus.CANCELLED}]
    if finished:
        listing = ", ".join(f"{r.id} ({r.status.value})" for r in finished)
        raise cli_error(f"cannot cancel finished runs: {listing}", ExitCode.FAILED)
    targets = [r for r in records if r.status is not RunStatus.CANCELLED]
    already = [r.id for r in records if r.status is RunStatus.CANCELLED]
    revoking = not no_revoke
    work = [unfinished_work(db, r.id) for r in records]
    url, options = broker_of(state, broker)
    report: RevokeReport | None = None
    if not dry_run:
        ids = task_ids_to_revoke(work, terminate) if revoking else []
        if ids and url is None:
            raise no_broker(
                "runs cancel",
                "revoke the runs' tasks through",
                ", or give --no-revoke to only mark the ledger",
            )
        if targets or ids:
            confirm_or_refuse(_action(targets, len(ids)), yes, _details(records, work))
        for record in targets:
            db.runs.cancel(record.id)
        if revoking and url is not None:
            work = [unfinished_work(db, r.id) for r in records]  # what joined meanwhile too
            ids = task_ids_to_revoke(work, terminate)
            if ids:
                report = _sent(state, url, options, ids, terminate, targets)
    counts = {w.run_id: _counts(w, revoking, terminate) for w in work}
    if as_json:
        echo_json(_document(dry_run, targets, already, revoking, terminate, counts, report))
    else:
        verb = "Would cancel" if dry_run else "Cancelled"
        for record in targets:
            echo_fit(f"{verb} {record.id}  {record.workspace}")
        for run_id in already:
            click.echo(f"Already cancelled {run_id}")
        for run_id, c in counts.items():
            echo_fit(_summary(run_id, c, revoking, dry_run))
        if report is not None and report.answered:
            echo_fit(
                f"Revoke acknowledged by {plural(len(report.answered), 'worker')}: "
                + ", ".join(report.answered)
            )
    for line in _warnings(report):
        click.echo(line, err=True)


def _document(
    dry_run: bool,
    targets: Sequence[Run],
    already: Sequence[str],
    revoking: bool,
    terminate: bool,
    counts: dict[str, dict[str, int]],
    report: RevokeReport | None,
) -> dict[str, Any]:
    """The ``--json`` document (docs/cli.md)."""
    return {
        "dry_run": dry_run,
        "cancelled": [r.id for r in targets],
        "already_cancelled": list(already),
        "revoke": revoking,
        "terminate": terminate,
        **{key: sum(c[key] for c in counts.values()) for key in COUNTS},
        "runs": [{"id": run_id, **c} for run_id, c in counts.items()],
        "answered": list(report.answered) if report else [],
        "errors": [{"worker": n, "error": e} for n, e in report.errors] if report else [],
    }


def _action(targets: Sequence[Run], revoked: int) -> str:
    """What the confirmation asks: "cancel 2 runs and revoke 35 tasks"."""
    parts = [f"cancel {plural(len(targets), 'run')}"] if targets else []
    if revoked:
        parts.append(f"revoke {plural(revoked, 'task')}")
    return " and ".join(parts)


def _details(records: Sequence[Run], work: Sequence[RunWork]) -> list[str]:
    return [
        f"{r.id}  {r.status.value}  {len(w.waiting)} waiting, {len(w.running)} running  "
        f"{r.workspace}"
        for r, w in zip(records, work, strict=True)
    ]
