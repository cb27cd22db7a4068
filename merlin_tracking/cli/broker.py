"""Which Celery broker a command talks to (``runs requeue``, ``runs cancel``): ``--broker URL``,
else ``$CELERY_BROKER_URL``, else the broker of the app given to ``celery -A APP tracking``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from merlin_tracking.cli.context import CliState
from merlin_tracking.cli.errors import CliError, ExitCode, cli_error

BROKER_ENV = "CELERY_BROKER_URL"
F = TypeVar("F", bound=Callable[..., Any])


def broker_option(what: str) -> Callable[[F], F]:
    """The ``--broker URL`` option; ``what`` completes "The broker to ..."."""
    return click.option(
        "--broker",
        metavar="URL",
        help=f"The broker to {what}. Default: ${BROKER_ENV}, else the broker of the app "
        "given to `celery -A APP tracking`.",
    )


def broker_of(state: CliState, given: str | None) -> tuple[str | None, dict[str, Any]]:
    """(URL or None, transport options): the options are the app's, when there is one."""
    app = state.app
    options: dict[str, Any] = dict(
        getattr(getattr(app, "conf", None), "broker_transport_options", None) or {}
    )
    url = given or os.environ.get(BROKER_ENV)
    if url is None and app is not None:
        url = app.conf.broker_url
    return url, options


def no_broker(command: str, why: str, alternative: str = "") -> CliError:
    """The usage error of a command that needs a broker and found none."""
    return cli_error(
        f"no broker to {why}: give --broker URL, set {BROKER_ENV}, or run "
        f"`celery -A APP tracking {command}`{alternative}",
        ExitCode.USAGE,
    )
