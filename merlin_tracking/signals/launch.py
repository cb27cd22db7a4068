"""``launch_study``: publish a canvas as one tracked run."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.canvas import Signature
from celery.utils.dispatch import Signal

from merlin_tracking.errors import DuplicateEntityError, TrackingError
from merlin_tracking.identity import RunIdentity
from merlin_tracking.records import Run
from merlin_tracking.signals.publish import launching
from merlin_tracking.signals.registry import tracker_for

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
            "tracking is disabled for this app (tracking_enabled = False or MERLIN_TRACKING=0); "
            "launch the signature with apply_async instead"
        )
    runs = tracker.db.runs
    try:
        fields = {"task_retention": tracker.config.task_retention, **run_fields}
        run = runs.create(study_name, workspace, [], **fields)
    except DuplicateEntityError as exc:
        run = runs.get(exc.existing_id)
        study = tracker.db.studies.get(study_name)
        if run.study_id != study.id:
            raise
    tracker.remember_run(workspace, run.id)
    pending_before = set(_pending_results(app))
    runs.change_publishing(run.id, +1)
    try:
        with launching(RunIdentity(study_name, workspace), tracker):
            signature.apply_async()
        _release_new_pending(app, pending_before)
        tracker.flush(30.0)
    finally:
        runs.change_publishing(run.id, -1)
    run = runs.get(run.id)
    study_launched.send(sender=app, run=run)
    return run


def _pending_results(app: Celery) -> dict[str, Any]:
    """Result objects the result backend is subscribed for, by task id (async backends)."""
    pending = getattr(app.backend, "_pending_results", None)
    concrete = getattr(pending, "concrete", None) or {}
    return {
        task_id: result
        for task_id, results in list(concrete.items())
        for result in list(getattr(results, "values", lambda: [])())
    }


def _release_new_pending(app: Celery, before: set[str]) -> None:
    """Drop the backend subscriptions that publishing the canvas created.

    ``launch_study`` returns the run, not AsyncResults, so nobody can wait on them; Celery's
    Redis backend would otherwise keep them (a chord's header results) until interpreter
    shutdown and then fail to unsubscribe.
    """
    try:
        for task_id, result in _pending_results(app).items():
            if task_id not in before:
                app.backend.remove_pending_result(result)
    except Exception:  # best effort: never fail a launch that already published
        pass
