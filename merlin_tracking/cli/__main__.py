"""``python -m merlin_tracking.cli``: the same commands as ``merlin-tracking``."""

from merlin_tracking.cli.main import cli

cli(prog_name="merlin-tracking")
