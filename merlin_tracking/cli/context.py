"""Which store a command talks to: ``--url``/``--prefix`` (or ``MERLIN_TRACKING_URL`` and
``MERLIN_TRACKING_PREFIX``), else the tracking settings of the Celery app given to
``celery -A APP tracking``, else the package defaults (``TrackingConfig`` without an app)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

import click

from merlin_tracking.cli.errors import ExitCode, cli_error
from merlin_tracking.config import TrackingConfig, default_sqlite_url
from merlin_tracking.database import TrackingDatabase
from merlin_tracking.stores import DEFAULT_PREFIX
from merlin_tracking.urls import mask_url

URL_ENV = "MERLIN_TRACKING_URL"
PREFIX_ENV = "MERLIN_TRACKING_PREFIX"
TIMEOUT_ENV = "MERLIN_TRACKING_TIMEOUT"
DB_ENV = "MERLIN_TRACKING_DB"
#: Seconds a command waits for a Redis answer unless told otherwise: a person at a terminal
#: should hear of a frozen server in seconds, not minutes.
DEFAULT_TIMEOUT = 3.0


@dataclass
class CliState:
    """Options of the root command; opens the database on first use."""

    url: str | None = None
    prefix: str | None = None
    app: Any = None  # the Celery app under ``celery tracking``, else None
    timeout: float | None = None
    _db: TrackingDatabase | None = field(default=None, repr=False)

    def resolve(self) -> tuple[str, str, float]:
        """(url, prefix, timeout): options and environment first, then the Celery app's
        settings, then the defaults."""
        url, prefix, timeout = self.url, self.prefix, self.timeout
        if url is None or prefix is None or timeout is None:
            conf = self.app.conf if self.app is not None else {}
            config = TrackingConfig.from_app_conf(conf)
            url = url or config.url
            prefix = prefix or config.prefix
            timeout = timeout or config.timeout or DEFAULT_TIMEOUT
        if not url:
            where = (
                "the app has no tracking_url and no Redis result_backend; "
                if self.app is not None
                else ""
            )
            raise cli_error(
                f"no tracking store given: {where}use --url URL or set {URL_ENV}",
                ExitCode.USAGE,
            )
        return url, prefix or DEFAULT_PREFIX, timeout

    def resolve_prefix(self) -> str:
        """The prefix alone, for commands that need no store: ``--prefix`` (or
        ``MERLIN_TRACKING_PREFIX``), else the Celery app's tracking_prefix, else the default."""
        if self.prefix is None and self.app is not None:
            return TrackingConfig.from_app_conf(self.app.conf).prefix
        return self.prefix or DEFAULT_PREFIX

    @property
    def db(self) -> TrackingDatabase:
        if self._db is None:
            url, prefix, timeout = self.resolve()
            if self.url is None and self._is_package_default(url):
                click.echo(default_store_notice(url, prefix), err=True)
            try:
                self._db = TrackingDatabase.from_url(url, prefix=prefix, timeout=timeout)
            except ValueError as exc:  # malformed URL or prefix (InvalidRecordError included)
                raise cli_error(f"{mask_url(url)}: {exc}", ExitCode.USAGE) from None
        return self._db

    def _is_package_default(self, url: str) -> bool:
        """Whether nobody named the store: no --url or environment, no tracking_url or Redis
        backend of the app, no MERLIN_TRACKING_DB; the SQLite file under the data home."""
        return not os.environ.get(DB_ENV) and url == default_sqlite_url(os.environ)

    def settled_db(self) -> TrackingDatabase:
        """The database, after completing runs whose settle delay has passed, so that a reader
        sees them COMPLETED even when no worker is left to do it. Best effort: a store this
        user may only read is read as it is."""
        db = self.db
        with contextlib.suppress(Exception):
            db.runs.settle()
        return db


def default_store_notice(url: str, prefix: str) -> str:
    """What stderr says when the store was not named: workers tracking to Redis (the common
    case) write elsewhere, and an empty answer from this file would look like no work."""
    path = url.removeprefix("sqlite:///")
    missing = "" if os.path.exists(path) else ", a file nothing has written yet"
    return (
        f"merlin-tracking: no store named, reading the default ledger {mask_url(url)} "
        f"(prefix {prefix}{missing}); for the ledger your workers write to, give --url URL, "
        f"or set {URL_ENV} or the app's tracking_url (celery -A APP tracking ...)"
    )


pass_state = click.make_pass_decorator(CliState)
