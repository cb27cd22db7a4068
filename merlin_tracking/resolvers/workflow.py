"""``workflow``: every Celery workflow is one run, keyed by where its results flow.

Celery gives every task of a chain, of a nested group or chord, callbacks, retries and
replacements the root task's id (``root_id``), so a workflow is keyed by its root. A top-level
group or chord is the exception: each header task is its own root (root_id == id). Such a task
is keyed by the outermost group its result flows into instead, read from the continuation the
message carries (Celery's embedded ``chain`` and ``chord``): the end of its chain and a chord
body carry the group id of the canvas they close. That puts a chain nested in a top-level group
(whose first task has no group id), a chord nested in a group (whose header tasks carry the
chord's own header group id) and a chain in a chord header in their group's run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from merlin_tracking.identity import RunIdentity
from merlin_tracking.resolvers.message import TaskMessage

# Nesting deeper than this is followed no further (the key is then the group found so far).
_MAX_DEPTH = 32


def _options(signature: Any) -> Mapping[str, Any]:
    options = signature.get("options") if isinstance(signature, Mapping) else None
    return options if isinstance(options, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def outer_group_id(
    group_id: str | None, chain: Sequence[Any] | None, chord: Mapping[str, Any] | None
) -> str | None:
    """The outermost group a task's result flows into: its own group, then the group of the end
    of its chain (Celery keeps the remaining chain last-to-run first), then the group of the
    chord body that chain end (or the task) feeds, and of that body's chord body, outwards."""
    found = group_id
    body: Any = chord
    if chain:
        end = _options(chain[0])
        found = _str(end.get("group_id")) or found
        body = end.get("chord")
    for _ in range(_MAX_DEPTH):
        if not isinstance(body, Mapping):
            break
        options = _options(body)
        found = _str(options.get("group_id")) or found
        body = options.get("chord")
    return found


def workflow_key(message: TaskMessage) -> str:
    """Root id, or for a root task that belongs to a group, the outermost group's id."""
    root = _str(message.root_id) or message.id
    if root != message.id:
        return root
    return outer_group_id(_str(message.group_id), message.chain, message.chord) or root


def workflow_resolver(message: TaskMessage) -> RunIdentity | None:
    """``workflow``: every Celery workflow is one run.

    Study = the task's name (the root task's, or for a group the first header task seen);
    workspace = ``celery://<app name>/<key>`` with the key of ``workflow_key``. A non-root task
    reaching a worker without headers and without a known root (rare: its parent ran
    untracked) is keyed by its root id.
    """
    return RunIdentity(
        message.name, f"celery://{message.app_name or 'celery'}/{workflow_key(message)}"
    )


workflow_resolver.description = (  # type: ignore[attr-defined]
    "run headers, then every Celery workflow (keyed by its root task or outermost group)"
)
