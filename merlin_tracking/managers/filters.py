"""Validation of ``get_all`` filters, shared by every manager and every store.

A filter maps a key to a value or a list of values. Keys AND together; the values of a list OR
together (an empty list matches nothing). Statuses are case-insensitive. The caller's dict is
never modified: a normalised copy (key -> list of strings) goes to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from merlin_tracking.errors import InvalidFilterError, InvalidRecordError, choices
from merlin_tracking.records import RunStatus, TaskState, WorkerStatus

Normaliser = Callable[[str], str]


def is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (as undecodable bytes in ``argv`` become):
    no store can hold one, so it names nothing and matches nothing."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _keep(value: str) -> str:
    if not is_unicode(value):
        raise InvalidFilterError(f"filter value {value!r} is not valid Unicode")
    return value


def _status(parse: Callable[[object], Any]) -> Normaliser:
    def normalise(value: str) -> str:
        try:
            return str(parse(_keep(value)).value)
        except InvalidRecordError as exc:
            raise InvalidFilterError(str(exc)) from None

    return normalise


FILTER_KEYS: dict[str, dict[str, Normaliser]] = {
    "study": {"name": _keep},
    "run": {
        "study_id": _keep,
        "status": _status(RunStatus.parse),
        "queues": _keep,
        "workers": _keep,
    },
    "logical_worker": {"name": _keep, "queues": _keep},
    "physical_worker": {
        "logical_worker_id": _keep,
        "name": _keep,
        "status": _status(WorkerStatus.parse),
        "host": _keep,
        "job_id": _keep,
    },
    "task": {
        "run_id": _keep,
        "state": _status(TaskState.parse),
        "worker": _keep,
        "name": _keep,
        "queue": _keep,
    },
}


def normalise_filters(entity: str, filters: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Validated copy of ``filters`` for ``entity``; raises ``InvalidFilterError``."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise InvalidFilterError(
            f"filters must be a mapping of key to value(s), got {type(filters).__name__}"
        )
    allowed = FILTER_KEYS[entity]
    result: dict[str, list[str]] = {}
    for key, raw in filters.items():
        if key not in allowed:
            raise InvalidFilterError(
                f"unknown {entity} filter {key!r}; valid filters: {choices(allowed)}"
            )
        values = [raw] if isinstance(raw, str) or hasattr(raw, "value") else raw
        if not isinstance(values, (list, tuple, set, frozenset)):
            raise InvalidFilterError(
                f"{entity} filter {key!r} takes a string or a list of strings, got "
                f"{type(raw).__name__} {raw!r}"
            )
        normalised = []
        for value in values:
            if hasattr(value, "value") and isinstance(value.value, str):
                value = value.value
            if not isinstance(value, str):
                raise InvalidFilterError(
                    f"{entity} filter {key!r} takes strings, got {type(value).__name__} {value!r}"
                )
            normalised.append(allowed[key](value))
        result[key] = sorted(set(normalised))
    return result


def check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidFilterError(f"limit must be a non-negative integer or None, got {limit!r}")
    return limit
