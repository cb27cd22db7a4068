"""``merlin``: attach Merlin's tasks to the run of their study workspace.

Facts from Merlin 2.0's messages: the study workspace is a folder
``<output dir>/<study name>_<YYYYmmdd-HHMMSS>``; it is the ``study_workspace`` keyword argument
of ``merlin_step``, positional argument 7 of the two expand tasks and argument 0 of
``mark_run_as_complete``. ``chordfinisher`` (and any Merlin task whose arguments do not name
the workspace) carries none: it follows its root or parent task, whose run the tracker
remembers. Messages are pickle-serialised, so arguments are read only where the worker has
already decoded them (``TaskMessage.args`` / ``kwargs``); nothing is deserialised here. Study
name = the workspace folder's name without its timestamp suffix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from merlin_tracking.identity import RunIdentity
from merlin_tracking.resolvers.message import TaskMessage

STEP = "merlin.common.tasks.merlin_step"
EXPAND = "merlin.common.tasks.expand_tasks_with_samples"
ADD_CHAIN = "merlin.common.tasks.add_merlin_expanded_chain_to_chord"
CONDENSE = "merlin.common.tasks.condense_status_files"
CHORDFINISHER = "merlin:chordfinisher"
MARK_COMPLETE = "merlin:mark_run_as_complete"
MERLIN_TASKS = frozenset({STEP, EXPAND, ADD_CHAIN, CONDENSE, CHORDFINISHER, MARK_COMPLETE})

# Positional index of the workspace, by task name.
_WORKSPACE_ARG = {EXPAND: 7, ADD_CHAIN: 7, MARK_COMPLETE: 0}
_TIMESTAMP = re.compile(r"_\d{8}-\d{6}$")


def is_merlin_task(name: str) -> bool:
    return name in MERLIN_TASKS or name.startswith(("merlin.common.tasks.", "merlin:"))


def study_of_workspace(workspace: str) -> str:
    """``/out/hello_20240101-120000`` -> ``hello``."""
    folder = os.path.basename(workspace.rstrip("/\\")) or workspace
    return _TIMESTAMP.sub("", folder) or folder


def workspace_of(message: TaskMessage) -> str | None:
    """The study workspace named by a Merlin task's arguments, if readable."""
    found: Any = None
    if message.name == STEP:
        kwargs = message.kwargs
        found = kwargs.get("study_workspace") if isinstance(kwargs, Mapping) else None
    elif message.name in _WORKSPACE_ARG:
        args = message.args
        index = _WORKSPACE_ARG[message.name]
        found = args[index] if args is not None and len(args) > index else None
        if found is None and message.kwargs:
            found = message.kwargs.get("workspace") or message.kwargs.get("study_workspace")
    if isinstance(found, os.PathLike):
        found = os.fspath(found)
    return found if isinstance(found, str) and found else None


def merlin_resolver(message: TaskMessage) -> RunIdentity | None:
    """The run of the Merlin study workspace a task belongs to; None for other tasks and for
    Merlin tasks that name no workspace (the tracker then uses the run of their root/parent)."""
    if not is_merlin_task(message.name):
        return None
    workspace = workspace_of(message)
    if workspace is None:
        return None
    return RunIdentity(study_of_workspace(workspace), workspace)


merlin_resolver.wants = is_merlin_task  # type: ignore[attr-defined]
# Merlin ends every study with this task: its success completes the run at once.
merlin_resolver.ends_run = frozenset({MARK_COMPLETE})  # type: ignore[attr-defined]
merlin_resolver.description = "Merlin's tasks by study workspace"  # type: ignore[attr-defined]
