"""The run filters of ``runs list`` and ``runs delete --all``: options, parsing and the query."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import click

from merlin_tracking.cli.timespec import moment_option
from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import InvalidFilterError, WorkerNotFoundError
from merlin_tracking.managers import InvalidPeriodError, RunQuery
from merlin_tracking.records import Run

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RunSelection:
    """The run filters of ``runs list`` and ``runs delete --all``, as given on the command line."""

    study: str | None = None
    statuses: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    worker: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    offset: int = 0

    @property
    def given(self) -> bool:
        return any(
            (self.study, self.statuses, self.queues, self.worker, self.since, self.until)
        ) or (self.limit is not None)

    def select(self, db: TrackingDatabase) -> list[Run]:
        """Matching runs, newest first. Unknown study/worker: not found; bad values: invalid."""
        try:  # the time window is checked first, before any lookup
            query = RunQuery(
                statuses=self.statuses or None,
                queues=self.queues or None,
                since=self.since,
                until=self.until,
                limit=self.limit,
                offset=self.offset,
            )
        except InvalidPeriodError as exc:
            raise InvalidFilterError(
                f"--since ({exc.since.isoformat()}) is after --until ({exc.until.isoformat()})"
            ) from None
        if self.study:
            query = replace(query, study_id=db.studies.get(self.study).id)
        if self.worker:
            query = replace(query, workers=logical_worker_ids(db, self.worker))
        return db.runs.query(query)


def logical_worker_ids(db: TrackingDatabase, worker: str) -> tuple[str, ...]:
    """Logical worker ids meant by ``worker``: a logical worker id or name, or a physical
    worker id or node name (its logical worker). ``WorkerNotFoundError`` if none."""
    logical = db.logical_workers.find(worker)
    if logical is not None:
        return (logical.id,)
    named = db.logical_workers.get_all({"name": worker})
    if named:
        return tuple(lw.id for lw in named)
    physical = db.physical_workers.find(worker)
    if physical is None:
        raise WorkerNotFoundError(worker)
    return (physical.logical_worker_id,) if physical.logical_worker_id else ()


def run_filter_options(func: F) -> F:
    """The filter options of ``runs list`` (also used by ``runs delete --all``)."""
    decorators = [
        click.option("--study", metavar="NAME|ID", help="Runs of this study."),
        click.option(
            "--status",
            "statuses",
            multiple=True,
            metavar="STATUS",
            help="Runs in this status (repeatable: any of them; case-insensitive): INITIALIZED, "
            "QUEUED, RUNNING, STALLED, COMPLETED, CANCELLED, FAILED.",
        ),
        click.option(
            "--queue",
            "queues",
            multiple=True,
            metavar="QUEUE",
            help="Runs using this queue (repeatable: any of them).",
        ),
        click.option(
            "--worker",
            metavar="ID|NAME",
            help="Runs served by this worker (logical id or name, physical id or node name).",
        ),
        click.option(
            "--since",
            callback=moment_option,
            metavar="TIME",
            help="Created at or after: ISO time, or a duration ago (2h, 3d).",
        ),
        click.option(
            "--until",
            callback=moment_option,
            metavar="TIME",
            help="Created at or before: ISO time, or a duration ago (2h, 3d).",
        ),
        click.option(
            "--limit",
            type=click.IntRange(min=0),
            metavar="N",
            help="At most this many runs (newest first).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def selection(**options: Any) -> RunSelection:
    return RunSelection(
        study=options["study"],
        statuses=tuple(options["statuses"]),
        queues=tuple(options["queues"]),
        worker=options["worker"],
        since=options["since"],
        until=options["until"],
        limit=options["limit"],
    )
