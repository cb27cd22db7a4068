"""The root command group: store options, sub-commands, and errors turned into exit codes.

The same group is the ``merlin-tracking`` console script and, through the ``celery.commands``
entry point, ``celery -A APP tracking`` (where the app's ``tracking_url`` is the default store).
"""

from __future__ import annotations

from typing import Any

import click

from merlin_tracking.cli import maintenance, runs, studies, watch, workers
from merlin_tracking.cli.acl import acl
from merlin_tracking.cli.context import DEFAULT_TIMEOUT, PREFIX_ENV, TIMEOUT_ENV, URL_ENV, CliState
from merlin_tracking.cli.errors import translate
from merlin_tracking.cli.info import info
from merlin_tracking.cli.options import examples
from merlin_tracking.cli.serve import report, serve
from merlin_tracking.errors import TrackingError
from merlin_tracking.version import __version__


class TrackingGroup(click.Group):
    """A group that reports package errors as one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TrackingError as exc:
            raise translate(exc) from None


@click.group(
    name="tracking",
    cls=TrackingGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "merlin-tracking --url redis://localhost:6379/0 info",
        "MERLIN_TRACKING_URL=redis://:pw@host/0 merlin-tracking runs list",
        "celery -A myproject tracking workers list --json",
    ),
)
@click.option(
    "--url",
    envvar=URL_ENV,
    show_envvar=True,
    metavar="URL",
    help="Store URL (redis://, rediss://, unix://, redis+cluster://, redis+sentinel://, "
    "sqlite:///path). Default: the tracking_url "
    "of the app given to `celery -A APP tracking`, else its Redis result_backend, else the "
    "SQLite file $MERLIN_TRACKING_DB or ~/.local/share/merlin_tracking/tracking.db.",
)
@click.option(
    "--prefix",
    envvar=PREFIX_ENV,
    show_envvar=True,
    metavar="PREFIX",
    help="Key prefix of the ledger. Default: the app's tracking_prefix, else merlin_tracking.",
)
@click.option(
    "--timeout",
    envvar=TIMEOUT_ENV,
    show_envvar=True,
    type=click.FloatRange(min=0, min_open=True, max=3600),
    metavar="SECONDS",
    help="Seconds to wait for the Redis server's answer before giving up with exit code 3. "
    f"Default: the app's tracking_timeout, else {DEFAULT_TIMEOUT:g}.",
)
@click.version_option(__version__, "--version", prog_name="merlin-tracking")
@click.pass_context
def cli(ctx: click.Context, url: str | None, prefix: str | None, timeout: float | None) -> None:
    """Inspect, filter, watch and clean up the merlin_tracking ledger of studies, runs and
    workers.

    Exit codes: 0 success, 1 not found or nothing matched, 2 usage error or invalid filter,
    3 store unreachable or refusing.
    """
    app = getattr(ctx.obj, "app", None)  # ``celery`` passes a context holding the -A app
    ctx.obj = CliState(url=url or None, prefix=prefix or None, app=app, timeout=timeout)


cli.add_command(info)
cli.add_command(runs.runs)
cli.add_command(studies.studies)
cli.add_command(workers.workers)
cli.add_command(maintenance.gc)
cli.add_command(maintenance.export)
cli.add_command(maintenance.import_)
cli.add_command(maintenance.migrate)
cli.add_command(watch.watch)
cli.add_command(acl)
cli.add_command(serve)
cli.add_command(report)
