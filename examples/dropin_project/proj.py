"""A plain Celery project with no tracking code at all.

With merlin_tracking installed in the same environment, every worker started with the
``celery`` command is tracked anyway (the package's ``celery.commands`` entry point installs
the worker hooks), and tasks that carry run headers are counted into their run:

    export PROJ_BROKER_URL=redis://127.0.0.1:6379/0      # and PROJ_RESULT_BACKEND, optional
    celery -A examples.dropin_project.proj worker -Q default -n default@%h
    merlin-tracking --url "$PROJ_BROKER_URL" workers list   # the worker is there

Set ``MERLIN_TRACKING=0`` in the worker's environment to opt out.
"""

from __future__ import annotations

import os

from celery import Celery

broker = os.environ.get("PROJ_BROKER_URL", "redis://127.0.0.1:6379/0")
app = Celery("proj", broker=broker, backend=os.environ.get("PROJ_RESULT_BACKEND", broker))
app.conf.task_default_queue = "default"


@app.task(name="proj.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="proj.total")
def total(values: list[int]) -> int:
    return sum(values)
