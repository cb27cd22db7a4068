"""``launch_study``: publish a canvas as one tracked run."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from celery import Celery
from celery.canvas import Signature
from celery.signals import after_task_publish
from celery.utils.dispatch import Signal

from merlin_tracking.errors import DuplicateEntityError, TrackingError
from merlin_tracking.identity import RunIdentity
from merlin_tracking.records import Run, RunStatus
from merlin_tracking.signals.publish import launching
from merlin_tracking.signals.registry import tracker_for
from merlin_tracking.signals.requests import described
from merlin_tracking.signals.tracker import Tracker

logger = logging.getLogger("merlin_tracking")

#: Sent after ``launch_study`` published a run: ``sender`` is the app, ``run`` the Run record.
study_launched = Signal(name="study_launched", providing_args={"run"})


def launch_study(
    app: Celery, study_name: str, workspace: str, signature: Signature, **run_fields: Any
) -> Run:
    """Publish ``signature`` (a task, chain, group or chord) as a run of ``study_name``.

    The run record is created first (or reused when ``workspace`` already has a run of this
    study); every message of the canvas, and every message its tasks publish later, carries
    the run headers. The run cannot complete before publishing is over. Returns the run as it
    stands after publishing. If publishing raises, the error goes to the caller and the run does
    not stay INITIALIZED: removed when no task went out, else FAILED (``launch_error`` in its
    ``additional_data``).
    """
    from merlin_tracking.signals.install import install

    tracker = tracker_for(app) or install(app)
    if tracker is None:
        raise TrackingError(
            "tracking is disabled for this app (tracking_enabled = False or MERLIN_TRACKING=0); "
            "launch the signature with apply_async instead"
        )
    runs = tracker.db.runs
    created = True
    try:
        fields = {"task_retention": tracker.config.task_retention, **run_fields}
        run = runs.create(study_name, workspace, [], **fields)
    except DuplicateEntityError as exc:
        run = runs.get(exc.existing_id)
        study = tracker.db.studies.get(study_name)
        if run.study_id != study.id:
            raise
        created = False
    tracker.remember_run(workspace, run.id)
    pending_before = set(_pending_results(app))
    runs.change_publishing(run.id, +1)
    with _counting_sent() as sent:
        try:
            with launching(RunIdentity(study_name, workspace), tracker):
                signature.apply_async()
            _release_new_pending(app, pending_before)
        except BaseException as exc:
            _abandon(tracker, run, created and not sent, exc)
            raise
    tracker.flush(30.0)
    runs.change_publishing(run.id, -1)
    run = runs.get(run.id)
    study_launched.send(sender=app, run=run)
    return run


@contextlib.contextmanager
def _counting_sent() -> Iterator[list[str]]:
    """The ids of the messages this thread got out to the broker meanwhile (Celery sends
    ``after_task_publish`` once the broker took a message; the publish hook counted it before)."""
    thread, sent = threading.get_ident(), []

    def count(sender: Any = None, headers: Any = None, **_: Any) -> None:
        if threading.get_ident() == thread:
            sent.append(str((headers or {}).get("id")))

    after_task_publish.connect(count, weak=False)
    try:
        yield sent
    finally:
        after_task_publish.disconnect(count)


def _abandon(tracker: Tracker, before: Run, remove: bool, exc: BaseException) -> None:
    """After a publish that raised (broker unreachable, transport missing, ...). ``remove``: the
    launch created the run and no message went out; the run goes, so that it does not wait
    INITIALIZED forever and a retry starts afresh. Otherwise a run that counted tasks of this
    launch is FAILED with the reason: some may run, the rest never will, it cannot complete. A
    reused run that counted nothing keeps its status. Best effort: the caller gets the publish
    error either way."""
    reason = described(exc) or type(exc).__name__
    runs = tracker.db.runs
    try:
        tracker.flush(30.0)  # the events of this launch, before the run goes
        runs.change_publishing(before.id, -1)
        if remove:
            runs.delete(before.id)
            return
        run = runs.get(before.id)
        if run.tasks_queued > before.tasks_queued and run.is_active:
            extra = {**run.additional_data, "launch_error": f"publishing failed: {reason}"}
            runs.update(run.id, status=RunStatus.FAILED, additional_data=extra)
    except Exception as cleanup:
        logger.warning(
            "merlin_tracking: run %s of a failed launch left as it is: %s", before.id, cleanup
        )


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
