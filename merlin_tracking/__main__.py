"""``python -m merlin_tracking``: the ``merlin-tracking`` command, for an environment whose
scripts folder is not on PATH (a virtualenv that is not activated)."""

from merlin_tracking.cli.main import cli

cli(prog_name="merlin-tracking")
