"""``acl``: the Redis ACL rules of a user that may do only what the package does, on one prefix.

The ``ACL SETUSER`` lines go to stdout, alone, so they can be piped into ``redis-cli``; what
they mean and how to give the user its password go to stderr.
"""

from __future__ import annotations

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.options import examples, json_option
from merlin_tracking.cli.output import echo_json
from merlin_tracking.database import TrackingDatabase


def _notes(user: str, prefix: str, read_only: bool) -> list[str]:
    """What the lines mean, as ``#`` comments (for stderr)."""
    tag = "{" + prefix + "}"
    if read_only:
        who, keys = "readers send (the CLI's and the Python API's reads)", "only, reading them only"
    else:
        who, keys = "workers, launchers and CLI send", "only"
    notes = [
        f"Redis 7.0+ ACL of user {user!r} for the ledger prefix {prefix!r}: it may run the",
        f"commands the package's {who},",
        f"on the keys {tag} and {tag}:* {keys}.",
        "Apply both lines as an administrator, e.g.",
        f"  merlin-tracking acl --prefix {prefix}{' --read-only' if read_only else ''}"
        " | redis-cli -h HOST",
        "Redis 7.0 and 7.1 answer the second line with 'Unknown command': harmless (they have",
        "no CLIENT SETINFO). The lines set no password and keep the user's own, so a new user",
        "cannot log in until you give it one, e.g. in redis-cli (it keeps ACL SETUSER out of",
        "its history):",
        f"  ACL SETUSER {user} >PASSWORD",
        f"and name it in the tracking URL: redis://{user}:PASSWORD@HOST:6379/0",
    ]
    if read_only:
        notes += [
            "A viewer cannot apply what time made due (stale workers' tasks LOST, settled runs",
            "COMPLETED): it reads the ledger as the last writer's catch-up left it.",
        ]
    else:
        notes += [
            "One user per prefix: the lines replace the user's key patterns, so give another",
            "prefix another --user.",
        ]
    return [f"# {note}" for note in notes]


@click.command(
    epilog=examples(
        "merlin-tracking acl --prefix myproj",
        "merlin-tracking acl --prefix myproj | redis-cli -h redis.example.org",
        "merlin-tracking acl --prefix myproj --read-only --user viewer",
        "celery -A myproject tracking acl",
    )
)
@click.option(
    "--prefix",
    "acl_prefix",
    metavar="PREFIX",
    help="Key prefix the user may use. Default: the group's --prefix, else the app's "
    "tracking_prefix, else merlin_tracking.",
)
@click.option(
    "--user",
    metavar="NAME",
    help="ACL user name. Default: merlin-tracking, with --read-only merlin-tracking-viewer.",
)
@click.option(
    "--read-only",
    is_flag=True,
    help="A viewer: only the read commands, and the prefix's keys readable only (%R~).",
)
@json_option
@pass_state
def acl(
    state: CliState, acl_prefix: str | None, user: str | None, read_only: bool, as_json: bool
) -> None:
    """Print the Redis ACL SETUSER lines of a least-privilege user: exactly the commands this
    package sends, on exactly the keys of one prefix. Needs no store; stdout holds only the
    lines (pipe them into redis-cli), stderr says what they mean and how to set the password."""
    prefix = acl_prefix or state.resolve_prefix()
    recipe = TrackingDatabase.redis_acl(prefix, user, read_only)
    if as_json:
        lines = list(recipe.lines)
        echo_json({"user": recipe.user, "prefix": prefix, "read_only": read_only, "lines": lines})
        return
    for note in _notes(recipe.user, prefix, read_only):
        click.echo(note, err=True)
    for line in recipe.lines:
        click.echo(line)
