"""``runs requeue RUN --lost``: publish a run's lost tasks again (``merlin_tracking.requeue``).

It needs the broker the tasks go through: ``--broker URL``, else ``$CELERY_BROKER_URL``, else
the broker of the app given to ``celery -A APP tracking``. Only tasks whose message the workers
kept (``tracking_keep_messages = True``) can be requeued; the others are listed.
"""

from __future__ import annotations

import click

from merlin_tracking.cli.broker import broker_of, broker_option, no_broker
from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.errors import ExitCode
from merlin_tracking.cli.options import (
    confirm_or_refuse,
    dry_run_option,
    examples,
    json_option,
    yes_option,
)
from merlin_tracking.cli.output import echo_fit, echo_json, plural
from merlin_tracking.requeue import RequeueReport, requeue_lost
from merlin_tracking.urls import mask_url


def _report_lines(report: RequeueReport) -> list[str]:
    verb = "Would requeue" if report.dry_run else "Requeued"
    lines = [f"{verb} {task_id}" for task_id in report.requeued]
    lines += [f"Not requeued {task_id}: no kept message" for task_id in report.without_message]
    lines += [f"Failed {task_id}: {why}" for task_id, why in report.failed]
    lines.append(f"{verb} {plural(len(report.requeued), 'lost task')} of run {report.run_id}.")
    if report.without_message:
        lines.append(
            f"{plural(len(report.without_message), 'lost task')} had no kept message "
            "(workers keep them with tracking_keep_messages = True)."
        )
    if report.failed:
        lines.append(f"{plural(len(report.failed), 'task')} could not be published (kept).")
    return lines


@click.command(
    "requeue",
    epilog=examples(
        "merlin-tracking runs requeue r12 --lost --dry-run",
        "merlin-tracking runs requeue r12 --lost --broker redis://host:6379/0 --yes",
        "celery -A myproject tracking runs requeue r12 --lost --yes",
    ),
)
@click.argument("run", metavar="RUN_ID|WORKSPACE")
@click.option("--lost", is_flag=True, required=True, help="Publish the run's LOST tasks again.")
@broker_option("publish to")
@dry_run_option
@yes_option
@json_option
@pass_state
def requeue_run(
    state: CliState,
    run: str,
    lost: bool,
    broker: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Publish each LOST task of a run again, once, under its own id and to its own queue, from
    the message its worker kept (tracking_keep_messages). Concurrent requeues never publish a
    task twice."""
    db = state.db
    preview = requeue_lost(db, run, None, dry_run=True)
    url, options = broker_of(state, broker)
    if not dry_run and preview.requeued:
        if url is None:
            raise no_broker("runs requeue", "publish to")
        confirm_or_refuse(
            f"publish {plural(len(preview.requeued), 'lost task')} of run {preview.run_id} "
            f"again through {mask_url(url)}",
            yes,
            list(preview.requeued),
        )
    report = (
        preview if dry_run or not preview.requeued else requeue_lost(db, run, url, False, options)
    )
    if as_json:
        echo_json(
            {
                "run_id": report.run_id,
                "dry_run": report.dry_run,
                "requeued": list(report.requeued),
                "without_message": list(report.without_message),
                "failed": [{"id": task_id, "error": why} for task_id, why in report.failed],
            }
        )
    else:
        for line in _report_lines(report):
            echo_fit(line)
    if report.failed:
        raise SystemExit(int(ExitCode.UNAVAILABLE))
