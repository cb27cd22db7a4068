"""Celery glue: signal receivers, the worker bootstep, ``install`` and ``launch_study``."""

from merlin_tracking.identity import STUDY_HEADER, WORKSPACE_HEADER
from merlin_tracking.signals.install import install
from merlin_tracking.signals.launch import launch_study, study_launched

__all__ = ["STUDY_HEADER", "WORKSPACE_HEADER", "install", "launch_study", "study_launched"]
