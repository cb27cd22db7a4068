"""The ``merlin-tracking`` command line (also ``celery tracking``); see ``docs/cli.md``."""

from merlin_tracking.cli.main import cli

__all__ = ["cli"]
