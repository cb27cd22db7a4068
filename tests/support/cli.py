"""Helpers for the command-line tests: invoke the CLI on a test's store, build ledger content."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from click.testing import CliRunner, Result

from merlin_tracking import Run, TrackingDatabase
from merlin_tracking.cli import cli
from merlin_tracking.records.events import TaskEvent, TaskEventKind

# The environment variables the CLI and TrackingConfig read, cleared for every invocation.
CLEAN_ENV: dict[str, str | None] = {
    "MERLIN_TRACKING_URL": None,
    "MERLIN_TRACKING_PREFIX": None,
    "MERLIN_TRACKING_DB": None,
    "CELERY_BROKER_URL": None,  # the broker of ``runs requeue`` and ``runs cancel``
}


class Cli:
    """Runs ``merlin-tracking --url URL --prefix PREFIX ARGS...`` in-process."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str | None] | None = None,
        obj: Any = None,
        store: bool = True,
    ) -> Result:
        options = ["--url", self.url, "--prefix", self.prefix] if store else []
        return CliRunner().invoke(
            cli,
            [*options, *args],
            input=input,
            env={**CLEAN_ENV, **(env or {})},
            obj=obj,
            catch_exceptions=True,
        )

    def json(self, *args: str, **kwargs: Any) -> Any:
        """The parsed JSON output of a command that must succeed."""
        result = self(*args, "--json", **kwargs)
        assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
        return json.loads(result.stdout)


def store_cli(request: pytest.FixtureRequest, store_backend: str, prefix: str) -> Cli:
    """A ``Cli`` on the store of the ``db`` fixture, so that a test runs on both stores (the
    URL fixture is looked up, as ``db`` does, rather than requested, which would make it a
    Redis-only test)."""
    url = request.getfixturevalue("sqlite_url" if store_backend == "sqlite" else "redis_url")
    return Cli(url, prefix)


def ok(result: Result) -> str:
    """stdout of a command that must have succeeded without a traceback."""
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def fails(result: Result, code: int, *fragments: str) -> str:
    """stderr of a command that must have failed with ``code`` and a one-line message."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return result.stderr


def make_run(
    db: TrackingDatabase,
    study: str,
    workspace: str,
    queues: Sequence[str] = ("q",),
    queued: int = 0,
    started: int = 0,
    succeeded: int = 0,
    failed: int = 0,
    **fields: Any,
) -> Run:
    """A run whose counters come from real task events: ``queued`` tasks published on the first
    queue, the first ``started`` of them started, then ``succeeded`` and ``failed`` of those."""
    run = db.runs.create(study, workspace, list(queues), **fields)
    events = [TaskEvent(run.id, f"t{i}", TaskEventKind.PUBLISHED, queues[0]) for i in range(queued)]
    events += [TaskEvent(run.id, f"t{i}", TaskEventKind.STARTED) for i in range(started)]
    events += [TaskEvent(run.id, f"t{i}", TaskEventKind.SUCCEEDED) for i in range(succeeded)]
    events += [
        TaskEvent(run.id, f"t{i}", TaskEventKind.FAILED)
        for i in range(succeeded, succeeded + failed)
    ]
    if events:
        db.runs.record_events(events)
    return db.runs.get(run.id)


def widest_line(text: str) -> int:
    from merlin_tracking.cli.output import text_width

    return max((text_width(line) for line in text.splitlines()), default=0)
