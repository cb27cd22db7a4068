"""The registry of trackers: which tracker the (app-agnostic) Celery signals report to in this
process, by app."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from merlin_tracking.signals.tracker import Tracker

# Keyed by the app object itself (weakly), so a collected app's tracker can never be handed to
# a new app that happens to reuse its id().
# An app installed with tracking off maps to None, so it never borrows another app's tracker.
_trackers: weakref.WeakKeyDictionary[Any, Tracker | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


# The one tracker of a process where exactly one app was installed, tracked: the common case,
# answered without looking up Celery's current app on every task event.
_only: Tracker | None = None


def _refresh_only() -> None:
    global _only
    values = list(_trackers.values())
    _only = values[0] if len(values) == 1 else None


def register(app: Any, tracker: Tracker) -> Tracker:
    """Attach ``tracker`` to ``app`` unless it has one; return the app's tracker."""
    with _lock:
        existing = _trackers.get(app)
        if existing is None:
            _trackers[app] = existing = tracker
        _refresh_only()
        return existing


def register_disabled(app: Any) -> None:
    """Remember that ``app`` is not tracked (its messages must not go to another ledger)."""
    with _lock:
        _trackers.setdefault(app, None)
        _refresh_only()


def tracker_for(app: Any) -> Tracker | None:
    return _trackers.get(app)


def active_tracker() -> Tracker | None:
    """The tracker of the current Celery app, or the only one installed."""
    if _only is not None:
        return _only
    if not _trackers:
        return None
    from celery import current_app

    app = current_app._get_current_object()
    if app in _trackers:
        return _trackers[app]
    trackers = [tracker for tracker in _trackers.values() if tracker is not None]
    return trackers[0] if len(trackers) == 1 else None
