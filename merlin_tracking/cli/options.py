"""Options shared by many commands, help examples, and the confirmation of destructive commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from merlin_tracking.cli.errors import ExitCode, cli_error
from merlin_tracking.cli.output import echo_fit

json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document (schema in docs/cli.md) instead of text.",
)
yes_option = click.option(
    "--yes",
    "-y",
    is_flag=True,
    help="Do not ask for confirmation (required when not on a terminal).",
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Show what would change, change nothing."
)


def examples(*lines: str) -> str:
    """A help epilog listing example command lines, kept as written (no rewrapping)."""
    body = "\n".join(f"  {line}" for line in lines)
    return f"\b\nExamples:\n{body}"


def is_interactive() -> bool:
    """True when a person can answer a prompt (stdin is a terminal)."""
    return sys.stdin.isatty()


def confirm_or_refuse(action: str, yes: bool, details: Sequence[str] = ()) -> None:
    """Go ahead with ``--yes``; otherwise ask on a terminal, or refuse (exit 2) off one.

    ``action`` completes "Really ...?" (e.g. "delete 3 runs"); ``details`` are shown first.
    """
    if yes:
        return
    if not is_interactive():
        raise cli_error(
            f"refusing to {action} without --yes: stdin is not a terminal, so nobody can confirm",
            ExitCode.USAGE,
        )
    shown = list(details[:20])
    if len(details) > len(shown):
        shown.append(f"… and {len(details) - len(shown)} more")
    for line in shown:
        echo_fit(f"  {line}", err=True)
    click.confirm(f"Really {action}?", abort=True, err=True)
