"""``launch_study``: publish a canvas as one tracked run."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.canvas import Signature
from celery.utils.dispatch import Signal

from merlin_tracking.errors import DuplicateEntityError, TrackingError
from merlin_tracking.records import Run
from merlin_tracking.signals.publish import launching
from merlin_tracking.signals.state import tracker_for
from merlin_tracking.signals.tracker import RunIdentity

#: Sent after ``launch_study`` published a run: ``sender`` is the app, ``run`` the Run record.
study_launched = Signal(name="study_launched", providing_args={"run"})


def launch_study(
    app: Celery, study_name: str, workspace: str, signature: Signature, **run_fields: Any
) -> Run:
    """Publish ``signature`` (a task, chain, group or chord) as a run of ``study_name``.

    The run record is created first (or reused when ``workspace`` already has a run of this
    study); every message of the canvas, and every message its tasks publish later, carries
    the run headers. The run cannot complete before publishing is over. Returns the run as it
    stands after publishing.
    """
    from merlin_tracking.signals.install import install

    tracker = tracker_for(app) or install(app)
    if tracker is None:
        raise TrackingError(
            "tracking is disabled for this app (tracking_enabled, MERLIN_TRACKING or no "
            "tracking_url / Redis result backend); launch the signature with apply_async instead"
        )
    runs = tracker.db.runs
    try:
        run = runs.create(study_name, workspace, [], **run_fields)
    except DuplicateEntityError as exc:
        run = runs.get(exc.existing_id)
        study = tracker.db.studies.get(study_name)
        if run.study_id != study.id:
            raise
    tracker.remember_run(workspace, run.id)
    runs.change_publishing(run.id, +1)
    try:
        with launching(RunIdentity(study_name, workspace)):
            signature.apply_async()
        tracker.flush(30.0)
    finally:
        runs.change_publishing(run.id, -1)
    run = runs.get(run.id)
    study_launched.send(sender=app, run=run)
    return run
