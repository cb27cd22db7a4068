"""Every Redis command the package sends, listed once, and the ACL rules that allow only those.

Redis checks a user's ACL on every command, those a Lua script calls included, and on every key
a command names. A user allowed these commands on the keys of one prefix can do all the package
does (workers, launchers, the command line) and nothing else; ``merlin-tracking acl`` prints the
rules and docs/storage.md explains them. ``tests/stores/test_acl.py`` fails when a script or the
Python side starts using a command missing here.
"""

from __future__ import annotations

import dataclasses
import re

from merlin_tracking.errors import InvalidRecordError
from merlin_tracking.stores.redis.keys import tagged_prefix

#: redis-py's connection set-up (AUTH; HELLO with RESP3; SELECT for a database other than 0)
#: and its health checks (PING).
CONNECTION = ("auth", "hello", "select", "ping")
#: Every write, and the reads that need more than one command, are scripts run by SHA; a
#: server that forgot them (restart, SCRIPT FLUSH) gets them loaded again.
SCRIPTING = ("evalsha", "script|load")
#: ``info`` shows the server's version and memory use.
SERVER = ("info",)
#: Commands that change nothing, sent from Python (pipelined reads) or called by the scripts.
READS = (
    "exists",
    "get",
    "hexists",
    "hget",
    "hgetall",
    "hkeys",
    "hmget",
    "lrange",
    "scard",
    "sinter",
    "sismember",
    "smembers",
    "smismember",
    "srandmember",
    "strlen",
    "sunion",
    "time",
    "zrangebyscore",
)
#: Commands that change keys: called by the scripts, and SET of the task index's marker key.
WRITES = (
    "del",
    "hdel",
    "hincrby",
    "hset",
    "incr",
    "lpush",
    "lrem",
    "ltrim",
    "persist",
    "pexpire",
    "sadd",
    "set",
    "setrange",
    "srem",
    "zadd",
    "zrem",
)
#: What redis-py's RedisCluster sends to find the nodes and follow them: the slot map (CLUSTER
#: SLOTS, CLUSTER SHARDS), the command table it routes by (COMMAND, COMMAND GETKEYS), ASKING
#: after an ASK redirect, READONLY and READWRITE for reads from replicas. Granted to every
#: user: harmless on a standalone server, which answers them without changing anything.
CLUSTER_DISCOVERY = (
    "cluster|slots",
    "cluster|shards",
    "command",
    "asking",
    "readonly",
    "readwrite",
)
#: redis-py names itself on connect (CLIENT SETINFO) and ignores a refusal, which the server
#: still logs (ACL LOG). Servers before 7.2 have no such command and reject a rule naming it,
#: so it is granted by a line of its own.
SINCE_7_2 = ("client|setinfo",)

#: Every command the package sends to a Redis server.
ALL_COMMANDS = frozenset(
    (*CONNECTION, *SCRIPTING, *SERVER, *READS, *WRITES, *CLUSTER_DISCOVERY, *SINCE_7_2)
)

#: The users ``acl`` sets up unless told another name: one that may write, one that may only read.
DEFAULT_USER = "merlin-tracking"
DEFAULT_VIEWER = "merlin-tracking-viewer"

_USER_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def check_user(user: object) -> str:
    """``user`` if it can name the ACL user: no spaces (Redis splits rules on them), nothing a
    ``redis://user:password@host`` URL would need escaped, and not the server's admin."""
    if not isinstance(user, str) or not _USER_RE.match(user):
        raise InvalidRecordError(
            f"invalid ACL user name {user!r}: use 1-100 characters from letters, digits, '_', "
            "'.' and '-'"
        )
    if user == "default":
        raise InvalidRecordError(
            "ACL user 'default' is the server's own user (used by connections that give no "
            "name): limiting it would lock out its administrators; name another user"
        )
    return user


def glob_escape(text: str) -> str:
    """``text`` as a key pattern that matches only itself. ``check_prefix`` admits no
    glob-special character today; escaping keeps the pattern exact should that rule widen."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def commands(read_only: bool = False) -> tuple[str, ...]:
    """The commands a user needs (a viewer: all but the writes), for the first rule line."""
    writes = () if read_only else WRITES
    return (*CONNECTION, *SCRIPTING, *SERVER, *READS, *writes, *CLUSTER_DISCOVERY)


def key_patterns(prefix: str, read_only: bool = False) -> tuple[str, str]:
    """``{prefix}``, the key every script names as KEYS[1] (it holds no data, and EVALSHA
    declares its keys read-write, so a viewer needs it too), and ``{prefix}:*``, every stored
    key: read-only (``%R~``) for a viewer, so the server refuses its writes."""
    tag = glob_escape(tagged_prefix(prefix))
    return f"~{tag}", f"{'%R' if read_only else ''}~{tag}:*"


@dataclasses.dataclass(frozen=True)
class AclRecipe:
    """The ``ACL SETUSER`` commands for ``user``: Redis 7.0 or later; the second line for 7.2
    or later (it names a command earlier servers do not have).

    The first line replaces the user's commands, keys, channels and selectors and switches it
    on. It sets no password and keeps the user's own, so it can be applied again after an
    upgrade, and a new user cannot log in before it is given one."""

    user: str
    lines: tuple[str, str]


def recipe(prefix: str, user: str | None = None, read_only: bool = False) -> AclRecipe:
    """The rules of a user of ``prefix`` (``read_only``: a viewer; ``user`` defaults to
    ``DEFAULT_USER`` or ``DEFAULT_VIEWER``)."""
    name = check_user(user or (DEFAULT_VIEWER if read_only else DEFAULT_USER))
    reset = ("on", "resetkeys", "resetchannels", "clearselectors", "-@all")
    rules = " ".join((*reset, *key_patterns(prefix, read_only)))
    allowed = " ".join(f"+{command}" for command in commands(read_only))
    since = " ".join(f"+{command}" for command in SINCE_7_2)
    return AclRecipe(name, (f"ACL SETUSER {name} {rules} {allowed}", f"ACL SETUSER {name} {since}"))
