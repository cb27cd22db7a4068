"""Which run a task message belongs to: the run headers and ``RunIdentity``.

A message belongs to a run when its headers name a study and a workspace. ``launch_study``
stamps them, tasks inherit them, and run resolvers (a public plug-in API) answer with a
``RunIdentity``. This module sits below the Celery glue and the resolvers, so both import it
without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STUDY_HEADER = "merlin_tracking_study"
WORKSPACE_HEADER = "merlin_tracking_workspace"
RUN_HEADERS = (STUDY_HEADER, WORKSPACE_HEADER)


@dataclass(frozen=True)
class RunIdentity:
    """Which run a message belongs to, as carried by its headers (or found by a resolver).

    ``fields``: extra run fields (``parameters``, ``samples``, or anything else, kept in
    ``additional_data``) set when this process is the one that creates the run; they are not
    part of the identity and do not travel in message headers. Build with ``with_fields``.
    """

    study: str
    workspace: str
    fields: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @classmethod
    def with_fields(cls, study: str, workspace: str, **fields: Any) -> RunIdentity:
        return cls(study, workspace, tuple(sorted(fields.items())))


# The identities the hooks built lately, by (study, workspace): every event of a task reads its
# run from its headers, and building a frozen dataclass costs more than finding it again.
_SEEN: dict[tuple[str, str], RunIdentity] = {}
_SEEN_CAPACITY = 4096


def _identity(study: Any, workspace: Any) -> RunIdentity | None:
    if isinstance(study, str) and isinstance(workspace, str) and study and workspace:
        found = _SEEN.get((study, workspace))
        if found is None:
            if len(_SEEN) >= _SEEN_CAPACITY:
                _SEEN.clear()
            found = _SEEN[(study, workspace)] = RunIdentity(study, workspace)
        return found
    return None


def run_of_headers(headers: Mapping[str, Any] | None) -> RunIdentity | None:
    """The run named by a message's headers, if they name one."""
    if not headers:
        return None
    return _identity(headers.get(STUDY_HEADER), headers.get(WORKSPACE_HEADER))


def run_of_request(request: Any) -> RunIdentity | None:
    """The run carried by a task request (Celery turns custom headers into attributes)."""
    if request is None:
        return None
    return _identity(getattr(request, STUDY_HEADER, None), getattr(request, WORKSPACE_HEADER, None))


__all__ = [
    "RUN_HEADERS",
    "STUDY_HEADER",
    "WORKSPACE_HEADER",
    "RunIdentity",
    "run_of_headers",
    "run_of_request",
]
