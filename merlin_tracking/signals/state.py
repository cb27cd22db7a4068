"""Which tracker the (app-agnostic) Celery signals report to in this process."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from merlin_tracking.signals.tracker import Tracker

# Keyed by the app object itself (weakly), so a collected app's tracker can never be handed to
# a new app that happens to reuse its id().
_trackers: weakref.WeakKeyDictionary[Any, Tracker] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def register(app: Any, tracker: Tracker) -> Tracker:
    """Attach ``tracker`` to ``app`` unless it has one; return the app's tracker."""
    with _lock:
        return _trackers.setdefault(app, tracker)


def tracker_for(app: Any) -> Tracker | None:
    return _trackers.get(app)


def active_tracker() -> Tracker | None:
    """The tracker of the current Celery app, or the only one installed."""
    if not _trackers:
        return None
    from celery import current_app

    tracker = _trackers.get(current_app._get_current_object())
    if tracker is None and len(_trackers) == 1:
        tracker = next(iter(_trackers.values()), None)
    return tracker
