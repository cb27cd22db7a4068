"""What the API and the pages read: the CLI's ``--json`` documents, paged and filtered from
query parameters.

Every function takes the query parameters as a multi-dict of strings and raises the package's
typed errors (``InvalidFilterError`` for a bad parameter, ``*NotFoundError``), which
``api.py`` turns into 400 and 404 answers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from merlin_tracking.cli.documents import (
    logical_document,
    newest_first,
    physical_document,
    run_documents,
    study_document,
    task_document,
)
from merlin_tracking.cli.run_selection import RunSelection
from merlin_tracking.cli.run_show import live_queues, show_document, task_trouble
from merlin_tracking.cli.timespec import parse_moment
from merlin_tracking.database import TrackingDatabase
from merlin_tracking.errors import InvalidFilterError, InvalidRecordError
from merlin_tracking.records import RunStatus, TaskState
from merlin_tracking.records.run import ACTIVE_STATUSES

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


class Params(Protocol):
    """Starlette's ``QueryParams`` (or any multi-dict of strings)."""

    def get(self, key: str, /) -> str | None: ...

    def getlist(self, key: str, /) -> list[str]: ...


@dataclass(frozen=True)
class Page:
    """``offset`` and ``limit`` of a paged list; what every list document reports back."""

    offset: int = 0
    limit: int = DEFAULT_LIMIT

    def keys(self, total: int) -> dict[str, int]:
        return {"total": total, "offset": self.offset, "limit": self.limit}


def integer(params: Params, name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidFilterError(f"{name}: must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise InvalidFilterError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def page_of(params: Params) -> Page:
    return Page(
        offset=integer(params, "offset", 0, 0, 10**9),
        limit=integer(params, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT),
    )


def _many(params: Params, name: str) -> tuple[str, ...]:
    """Repeated (``?status=a&status=b``) or comma-separated (``?status=a,b``) values."""
    return tuple(v.strip() for raw in params.getlist(name) for v in raw.split(",") if v.strip())


def _moment(params: Params, name: str) -> Any:
    text = params.get(name)
    if not text:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise InvalidFilterError(f"{name}: {exc}") from None


def run_selection(params: Params) -> RunSelection:
    """The filters of ``runs list``, from ``study``, ``status``, ``queue``, ``worker``,
    ``since`` and ``until``."""
    return RunSelection(
        study=params.get("study") or None,
        statuses=_many(params, "status"),
        queues=_many(params, "queue"),
        worker=params.get("worker") or None,
        since=_moment(params, "since"),
        until=_moment(params, "until"),
    )


def runs_list(db: TrackingDatabase, params: Params) -> dict[str, Any]:
    """``runs list --json`` (``{count, runs}``) for one page, plus ``total``, ``offset``,
    ``limit`` and ``stalled`` (the stalled runs among all matches)."""
    page = page_of(params)
    chosen = run_selection(params)
    if chosen.study or chosen.queues or chosen.worker or chosen.since or chosen.until:
        matching = chosen.select(db)
        shown = matching[page.offset : page.offset + page.limit]
        stalled = sum(1 for run in matching if run.status is RunStatus.STALLED)
        total = len(matching)
    else:  # by status only: count from the status index, read only up to the page
        shown = replace(chosen, offset=page.offset, limit=page.limit).select(db)
        counts = db.runs.count_by_status()
        wanted = {RunStatus.parse(s).value for s in chosen.statuses} or set(counts)
        total = sum(n for status, n in counts.items() if status in wanted)
        stalled = counts[RunStatus.STALLED.value] if RunStatus.STALLED.value in wanted else 0
    documents = run_documents(db, shown)
    return {
        "count": len(documents),
        "runs": documents,
        "stalled": stalled,
        **page.keys(total),
    }


def run_show(db: TrackingDatabase, run: str) -> dict[str, Any]:
    """``runs show --json``."""
    details = db.run_details(run)
    return show_document(details, task_trouble(db, details.run))


def _task_states(params: Params) -> list[str]:
    try:
        return [TaskState.parse(value).value for value in _many(params, "state")]
    except InvalidRecordError as exc:
        raise InvalidFilterError(f"state: {exc}") from None


def run_tasks(db: TrackingDatabase, run: str, params: Params) -> dict[str, Any]:
    """``runs tasks --json`` (``{run_id, count, tasks}``, oldest first) for one page, filtered by
    ``state``, ``worker``, ``name`` and ``queue``, plus ``total``, ``offset``, ``limit``."""
    page = page_of(params)
    record = db.runs.get(run)
    filters: dict[str, Any] = {"run_id": record.id}
    states = _task_states(params)
    if states:
        filters["state"] = states
    for key in ("worker", "name", "queue"):
        value = params.get(key)
        if value:
            filters[key] = value
    matching = db.tasks.get_all(filters)
    shown = matching[page.offset : page.offset + page.limit]
    return {
        "run_id": record.id,
        "count": len(shown),
        "tasks": [task_document(task) for task in shown],
        **page.keys(len(matching)),
    }


def uncovered_queues(db: TrackingDatabase) -> list[str]:
    """Queues of active runs that no live (RUNNING) physical worker consumes."""
    active = db.runs.get_all({"status": [status.value for status in ACTIVE_STATUSES]})
    wanted = {queue for run in active for queue in run.queues}
    return sorted(wanted - live_queues(db))


def workers_list(db: TrackingDatabase) -> dict[str, Any]:
    """``workers list --json`` plus ``uncovered_queues``."""
    logical = db.logical_workers.get_all()
    physical = db.physical_workers.get_all()
    return {
        "logical_workers": [logical_document(lw, physical) for lw in logical],
        "physical_workers": [physical_document(pw) for pw in physical],
        "uncovered_queues": uncovered_queues(db),
    }


def studies_list(db: TrackingDatabase, params: Params) -> dict[str, Any]:
    """``studies list --json`` (``{count, studies}``, newest first) for one page."""
    page = page_of(params)
    records = sorted(db.studies.get_all(), key=lambda s: (s.created_at, s.id), reverse=True)
    shown = records[page.offset : page.offset + page.limit]
    return {
        "count": len(shown),
        "studies": [study_document(s) for s in shown],
        **page.keys(len(records)),
    }


def study_show(db: TrackingDatabase, study: str) -> dict[str, Any]:
    """``studies show --json``."""
    record = db.studies.get(study)
    runs = run_documents(db, newest_first(db.runs.get_many(record.runs)))
    return {"study": study_document(record), "runs": runs}
