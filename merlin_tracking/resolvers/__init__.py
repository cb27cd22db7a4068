"""Run resolvers: which run a task message belongs to when its headers do not say.

A resolver is a callable ``resolver(message: TaskMessage) -> RunIdentity | None``. It is chosen
by the setting ``tracking_run_resolver`` (env ``MERLIN_TRACKING_RUN_RESOLVER``): a built-in
name, the name of an entry point in the group ``merlin_tracking.resolvers``, or
``module:callable``. It is asked only about messages without run headers (``launch_study`` and
inherited headers always win), at publish time in a tracked publisher and at the worker for
messages no tracked publisher stamped. Built in:

* ``auto`` (default): the run headers, then Merlin's own tasks (recognised by name) by the
  ``merlin`` resolver; nothing else. Installing the package in Merlin's environment is enough.
* ``headers``: only the run headers count; no resolution.
* ``workflow``: every Celery workflow is a run (see ``resolvers.workflow``).
* ``merlin``: Merlin's tasks join the run of their study workspace (see ``resolvers.merlin``).

A resolver may carry three optional attributes: ``wants(task_name) -> bool`` (a cheap test
the tracker applies before building a ``TaskMessage``), ``ends_run`` (names of tasks whose
success completes their run at once) and ``description`` (what it tracks, for the worker's
start-up log).

The tracker remembers each answer under the task's root, group and task ids; a message whose
root, parent or group was resolved in this process gets that run without asking the resolver
again. A resolver must therefore give every task of one workflow, and every member of one
group, the same run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from merlin_tracking.errors import ConfigurationError
from merlin_tracking.identity import RunIdentity, run_of_headers
from merlin_tracking.resolvers.merlin import MARK_COMPLETE, is_merlin_task, merlin_resolver
from merlin_tracking.resolvers.message import TaskMessage
from merlin_tracking.resolvers.workflow import workflow_resolver

ENTRY_POINT_GROUP = "merlin_tracking.resolvers"
DEFAULT_RESOLVER = "auto"

Resolver = Callable[[TaskMessage], RunIdentity | None]


#: Said in the worker's start-up log by the resolvers that leave plain Celery work untracked,
#: so that someone who sees no runs for ``.delay()`` or a canvas knows the setting.
PLAIN_WORK_UNTRACKED = (
    "plain .delay()/apply_async and canvases make no runs; "
    'set tracking_run_resolver = "workflow" to give each workflow a run'
)


def headers_resolver(message: TaskMessage) -> RunIdentity | None:
    """``headers``: the run named by the message's run headers, if any."""
    return run_of_headers(message.headers)


headers_resolver.description = (  # type: ignore[attr-defined]
    f"run headers only (launch_study and tasks they publish); {PLAIN_WORK_UNTRACKED}"
)


def auto_resolver(message: TaskMessage) -> RunIdentity | None:
    """``auto``: Merlin's own tasks by ``merlin``; every other message only by its headers."""
    return merlin_resolver(message) if is_merlin_task(message.name) else None


auto_resolver.wants = is_merlin_task  # type: ignore[attr-defined]
auto_resolver.ends_run = frozenset({MARK_COMPLETE})  # type: ignore[attr-defined]
auto_resolver.description = (  # type: ignore[attr-defined]
    "run headers, then Merlin's tasks (merlin.common.tasks.*, merlin:*) by study workspace; "
    + PLAIN_WORK_UNTRACKED
)


BUILTINS: dict[str, Resolver] = {
    "auto": auto_resolver,
    "headers": headers_resolver,
    "workflow": workflow_resolver,
    "merlin": merlin_resolver,
}


def _entry_point_names() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_names() -> list[str]:
    """Built-in and installed (entry point) resolver names."""
    try:
        names = set(_entry_point_names())
    except Exception:
        names = set()
    return sorted(names | set(BUILTINS))


def load_resolver(value: Any) -> Resolver:
    """The resolver named by ``value``; ``ConfigurationError`` naming the setting otherwise."""
    if value is None or value == "":
        value = DEFAULT_RESOLVER
    if not isinstance(value, str):
        raise invalid_resolver(value, "expected a name or module:callable")
    name = value.strip()
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            target: Any = importlib.import_module(module_name.strip())
            for part in attr.strip().split("."):
                target = getattr(target, part)
        except Exception as exc:
            raise invalid_resolver(
                value, f"cannot import it ({type(exc).__name__}: {exc})"
            ) from None
        if not callable(target):
            raise invalid_resolver(value, "it is not callable")
        return target  # type: ignore[no-any-return]
    if name in BUILTINS:
        return BUILTINS[name]
    try:
        found = _entry_point_names().get(name)
    except Exception:
        found = None
    if found is not None:
        try:
            loaded = found.load()
        except Exception as exc:
            raise invalid_resolver(value, f"its entry point failed to load ({exc})") from None
        if not callable(loaded):
            raise invalid_resolver(value, "its entry point is not callable")
        return loaded  # type: ignore[no-any-return]
    raise invalid_resolver(value, "unknown resolver")


def invalid_resolver(value: Any, why: str) -> ConfigurationError:
    """The error for a ``tracking_run_resolver`` that cannot work: the value, why, and the
    valid names."""
    return ConfigurationError(
        f"tracking_run_resolver: {value!r}: {why}; valid names: "
        f"{', '.join(available_names())}, or module:callable"
    )


__all__ = [
    "BUILTINS",
    "DEFAULT_RESOLVER",
    "ENTRY_POINT_GROUP",
    "PLAIN_WORK_UNTRACKED",
    "Resolver",
    "RunIdentity",
    "TaskMessage",
    "auto_resolver",
    "available_names",
    "headers_resolver",
    "invalid_resolver",
    "load_resolver",
    "merlin_resolver",
    "workflow_resolver",
]
