"""The ``celery tracking`` sub-command and the drop-in hook.

Celery imports every ``celery.commands`` entry point at the start of each ``celery ...``
command. Importing this module therefore connects a ``worker_init`` receiver, which runs
before a worker builds its bootsteps: every worker started with the ``celery`` command is
tracked without a line in the user's app. Opt out with ``tracking_enabled = False`` in the app
configuration or ``MERLIN_TRACKING=0`` in the environment.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from celery import signals


def _install_on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    from merlin_tracking.config import ConfigurationError
    from merlin_tracking.signals import install

    try:
        install(app)
    except ConfigurationError as exc:
        # Celery swallows exceptions raised by signal receivers; SystemExit gets through, so a
        # bad tracking_* setting stops the worker at start-up with the setting named.
        sys.stderr.write(f"merlin_tracking: {exc}\n")
        raise SystemExit(78) from None


signals.worker_init.connect(_install_on_worker_init, weak=False, dispatch_uid="merlin_tracking")


@click.group(name="tracking")
@click.pass_context
def tracking(ctx: click.Context) -> None:
    """Inspect the merlin_tracking ledger of the app given with -A."""


@tracking.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Print counts, backend and the newest runs as JSON."""
    from merlin_tracking.config import TrackingConfig
    from merlin_tracking.database import TrackingDatabase

    app = ctx.obj.app if ctx.obj is not None else None
    if app is None:
        raise click.UsageError("give the app with: celery -A PROJ tracking info")
    config = TrackingConfig.from_app_conf(app.conf)
    database = TrackingDatabase.from_url(config.url, prefix=config.prefix)
    click.echo(json.dumps(database.info(), indent=2, default=str))
