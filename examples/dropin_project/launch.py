"""Launch a tracked run against the drop-in project without changing the project's code.

    python -m examples.dropin_project.launch /scratch/runs/demo-001

The launching process installs tracking on its own copy of the app; the workers need nothing.
"""

from __future__ import annotations

import sys

from celery import chord

import merlin_tracking
from examples.dropin_project.proj import add, app, total


def main(workspace: str) -> None:
    run = merlin_tracking.launch_study(
        app, "dropin_demo", workspace, chord([add.s(i, i) for i in range(10)], total.s())
    )
    print(
        f"run {run.id} launched into {workspace}; follow it with: merlin-tracking runs show {run.id}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dropin-demo")
