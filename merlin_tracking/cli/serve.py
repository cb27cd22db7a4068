"""``serve`` (the web dashboard, JSON API and ``/metrics``) and ``report`` (one HTML file).

``serve`` needs the ``web`` extra and says how to install it when it is missing; ``report``
needs nothing more than the package.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.errors import ExitCode, cli_error
from merlin_tracking.cli.options import examples, json_option
from merlin_tracking.cli.output import echo_json
from merlin_tracking.urls import mask_url
from merlin_tracking.web import INSTALL_HINT, missing_packages
from merlin_tracking.web.security import TOKEN_ENV, WritePolicy


@click.command(
    epilog=examples(
        "merlin-tracking --url redis://localhost:6379/0 serve",
        'merlin-tracking serve --host 0.0.0.0 --port 9000 --token "$TOKEN"',
        "MERLIN_TRACKING_TOKEN=s3cret merlin-tracking serve --allow-writes",
        "celery -A myproject tracking serve",
    )
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8088, show_default=True, help="TCP port."
)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Enable cancel, requeue lost and delete (API and page buttons); needs a token.",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    show_envvar=True,
    metavar="TOKEN",
    help="Secret every write request must give (API: Authorization: Bearer TOKEN; pages: /login).",
)
@click.option(
    "--broker",
    metavar="URL",
    help="Broker to requeue lost tasks through. Default: $CELERY_BROKER_URL, else the app's.",
)
@json_option
@pass_state
def serve(
    state: CliState,
    host: str,
    port: int,
    allow_writes: bool,
    token: str | None,
    broker: str | None,
    as_json: bool,
) -> None:
    """Serve the dashboard (runs, one run with its charts, workers, studies; live), the JSON
    API under /api/ (the --json documents, paged) and Prometheus metrics on /metrics.

    Read-only unless --allow-writes is given with a token. --json: print
    {url, store, prefix, writable} on stdout once, before serving. Needs `pip install
    "merlin_tracking[web]"`.
    """
    missing = missing_packages()
    if missing:
        raise cli_error(f"serve needs {', '.join(missing)}: {INSTALL_HINT}", ExitCode.USAGE)
    if allow_writes and not token:
        raise click.UsageError(f"--allow-writes needs a token: --token or {TOKEN_ENV}")
    from merlin_tracking.web.api import Settings
    from merlin_tracking.web.server import exposure_warning, run

    settings = Settings(
        state=state, policy=WritePolicy(allow_writes=allow_writes, token=token), broker=broker
    )
    url, prefix, _ = state.resolve()
    state.db  # opened now: a bad URL is a usage error before the server starts  # noqa: B018
    warning = exposure_warning(host, settings)
    if warning:
        click.echo(warning, err=True)
    mode = "read-write" if settings.policy.writable else "read-only"
    if as_json:
        echo_json(
            {
                "url": f"http://{host}:{port}/",
                "store": mask_url(url),
                "prefix": prefix,
                "writable": settings.policy.writable,
            }
        )
    click.echo(
        f"merlin_tracking dashboard on http://{host}:{port}/ ({mode}) for {mask_url(url)} "
        f"prefix {prefix}",
        err=True,
    )
    run(settings, host, port)


@click.command(
    epilog=examples(
        "merlin-tracking report r12 -o r12.html",
        "merlin-tracking report /scratch/studies/sweep_20240501 -o sweep.html",
    )
)
@click.argument("run", metavar="RUN_ID|WORKSPACE")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="The HTML file to write (- for stdout).",
)
@json_option
@pass_state
def report(state: CliState, run: str, output: Path, as_json: bool) -> None:
    """Write one self-contained HTML file of a run: summary, timeline, throughput, durations,
    worker utilisation and failures. No script and no external reference.

    --json: print {run_id, file, bytes} once the file is written."""
    from merlin_tracking.web.report import render_report

    html = render_report(state.settled_db(), run)
    if str(output) == "-":
        click.echo(html)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, output)
    size = output.stat().st_size
    if as_json:
        echo_json({"run_id": run, "file": str(output), "bytes": size})
    else:
        click.echo(f"Wrote {output} ({size / 1e6:.2f} MB)")
