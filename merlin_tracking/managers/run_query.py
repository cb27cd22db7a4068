"""``RunQuery``: runs by study, status, queue, worker and creation time, newest (or oldest) first.

Run ids sort by creation, so a query sorts the matching ids, reads the runs page by page in
that order and stops as soon as the limit is reached or a run lies beyond the time window: the
ten newest runs of a large ledger cost one page, not a read of every run.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from merlin_tracking.errors import InvalidFilterError
from merlin_tracking.ids import id_sort_key
from merlin_tracking.managers.filters import check_limit, normalise_filters
from merlin_tracking.records import Run, RunStatus
from merlin_tracking.stores.base import TrackingStore

PAGE = 500  # runs read per round trip


class InvalidPeriodError(InvalidFilterError):
    """``since`` is after ``until``: such a window is a mistake, not an empty answer. Carries
    both bounds, so a caller can name them in its own terms (the CLI's ``--since``)."""

    def __init__(self, since: datetime, until: datetime) -> None:
        self.since, self.until = since, until
        super().__init__(f"since ({since.isoformat()}) is after until ({until.isoformat()})")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.since, self.until)


@dataclasses.dataclass(frozen=True)
class RunQuery:
    """Which runs ``RunManager.query`` returns: those matching every criterion given.

        ``None`` leaves a criterion out; a tuple matches any of its values, so an empty one matches
        nothing (as in ``get_all`` filters). ``workers`` are logical worker ids. ``since`` and
        ``until`` bound ``created_at`` (both inclusive). ``limit`` keeps the first runs in the order
        asked (``newest_first``, the default, or oldest first), after skipping the first ``offset``
    (a page further down: with no time window those runs are not even read). The limit and the time window are
        checked here (``InvalidFilterError``, ``InvalidPeriodError``); statuses and other values
        when the query runs, by the filter rules of ``managers.filters``.
    """

    study_id: str | None = None
    statuses: tuple[str | RunStatus, ...] | None = None
    queues: tuple[str, ...] | None = None
    workers: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    newest_first: bool = True
    offset: int = 0

    def __post_init__(self) -> None:
        check_limit(self.limit)
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise InvalidFilterError(f"offset must be an integer >= 0, got {self.offset!r}")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidPeriodError(self.since, self.until)

    def filters(self) -> dict[str, list[str]]:
        """The index filters of this query, validated (``InvalidFilterError``)."""
        given: dict[str, Any] = {
            "study_id": None if self.study_id is None else [self.study_id],
            "status": self.statuses,
            "queues": self.queues,
            "workers": self.workers,
        }
        return normalise_filters(
            Run.ENTITY, {key: list(values) for key, values in given.items() if values is not None}
        )

    def passed(self, run: Run) -> bool:
        """Whether ``run`` lies beyond the far end of the window in the reading order, so every
        run read after it does too."""
        if self.newest_first:
            return self.since is not None and run.created_at < self.since
        return self.until is not None and run.created_at > self.until

    def admits(self, run: Run) -> bool:
        """Whether ``run`` was created inside the window."""
        return not (
            (self.since is not None and run.created_at < self.since)
            or (self.until is not None and run.created_at > self.until)
        )


def select_runs(store: TrackingStore, query: RunQuery) -> list[Run]:
    """The runs matching ``query``, in its order, read page by page with an early stop."""
    ids = sorted(store.find_ids(Run, query.filters()), key=id_sort_key, reverse=query.newest_first)
    skip = query.offset
    if query.since is None and query.until is None:
        ids, skip = ids[skip:], 0  # every matching id is admitted: skip without reading
    wanted = None if query.limit is None else skip + query.limit
    selected: list[Run] = []
    start, size = 0, 0
    while start < len(ids) and (wanted is None or len(selected) < wanted):
        # Read about what the limit still wants (a first page of 50 reads 50 records), more
        # each time the window turns runs away, at most PAGE per round trip.
        size = PAGE if wanted is None else min(PAGE, max(wanted - len(selected), 2 * size))
        page = store.fetch_many(Run, ids[start : start + size])
        start += size
        page.sort(key=lambda run: (run.created_at, id_sort_key(run.id)), reverse=query.newest_first)
        for run in page:
            if query.passed(run):
                return selected[skip:wanted]
            if query.admits(run):
                selected.append(run)
    return selected[skip:wanted]


__all__ = ["PAGE", "InvalidPeriodError", "RunQuery", "select_runs"]
