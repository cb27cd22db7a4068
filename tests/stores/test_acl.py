"""The ACL command list (``stores/redis/acl.py``) names every command the package sends, and the
recipe built from it allows just those, on just the prefix's keys.

The lists are checked against the sources (every ``redis.call``/``redis.pcall`` of the Lua
scripts, every command method called on a client or pipeline in ``stores/redis``) and against a
real server (each command exists there, and the reads change nothing). That the recipe is
enough for real workers, launchers and the CLI is ``tests/cli/test_acl.py``.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import redis

from merlin_tracking import InvalidRecordError, TrackingDatabase
from merlin_tracking.stores.redis import acl

REDIS_PACKAGE = Path(acl.__file__).resolve().parent
# A call of a command from Lua; the name must be a string literal, so this test can read it.
_LUA_CALL = re.compile(r"redis\.p?call\s*\(")
_LUA_NAMED = re.compile(r"redis\.p?call\s*\(\s*(['\"])([A-Za-z_|]+)\1")
# Methods of redis-py's command mixins that send no command of their own.
_NOT_COMMANDS = frozenset({"register_script"})


def _lua_files() -> Iterator[tuple[str, str]]:
    folder = resources.files("merlin_tracking.stores.redis").joinpath("lua")
    pending = [folder]
    while pending:
        for item in pending.pop().iterdir():
            if item.is_dir():
                pending.append(item)
            elif item.name.endswith(".lua"):
                yield item.name, item.read_text(encoding="utf-8")


def commands_in_lua(source: str, where: str = "") -> set[str]:
    """The command names a Lua source calls (lower case)."""
    calls = _LUA_CALL.findall(source)
    named = _LUA_NAMED.findall(source)
    assert len(calls) == len(named), f"{where}: a redis.call whose command is not a literal"
    return {command.lower() for _, command in named}


def lua_commands() -> set[str]:
    """Every command name the package's scripts call."""
    found: set[str] = set()
    for name, source in _lua_files():
        found |= commands_in_lua(source, name)
    return found


def _is_client(node: ast.expr) -> bool:
    """``pipe``, ``client``, ``self.client``, ``self._client()``: what commands are sent on."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id in ("pipe", "client")
    return isinstance(node, ast.Attribute) and node.attr in ("client", "_client")


def _literal(node: ast.expr | None, where: str) -> str:
    assert isinstance(node, ast.Constant) and isinstance(node.value, str), (
        f"{where}: a command sent without its name written out"
    )
    return node.value.lower().replace(" ", "|")


def _forwarders(trees: list[ast.Module]) -> dict[str, int]:
    """Helpers that send the command named by one of their parameters (``same_slot(pipe,
    "SUNION", keys)``): helper name -> that parameter's position."""
    found: dict[str, int] = {}
    for tree in trees:
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            params = [a.arg for a in func.args.args]
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "execute_command"
                    and node.args
                    and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in params
                ):
                    found[func.name] = params.index(node.args[0].id)
    return found


def _is_command_method(name: str) -> bool:
    """A redis-py method that sends the command of its name (``hgetall``, ``script_load``), as
    opposed to helpers (``pipeline``, ``execute``, a cluster client's ``get_node_from_key``)."""
    method = getattr(redis.Redis, name, None)
    module = getattr(method, "__module__", "") or ""
    return module.startswith("redis.commands") and name not in _NOT_COMMANDS


def python_commands() -> set[str]:
    """Every command sent from ``stores/redis/*.py``: methods called on a client or pipeline
    (``script_load`` is SCRIPT LOAD), the names given to ``execute_command`` and to helpers
    that pass theirs on to it."""
    paths = sorted(REDIS_PACKAGE.glob("*.py"))
    trees = [ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in paths]
    forwarders = _forwarders(trees)
    found: set[str] = set()
    for path, tree in zip(paths, trees, strict=True):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.name}:{node.lineno}"
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in forwarders:
                found.add(_literal(node.args[forwarders[name]], where))
            elif name == "execute_command":
                first = node.args[0] if node.args else None
                if not (isinstance(first, ast.Name) and _inside_forwarder(tree, node, forwarders)):
                    found.add(_literal(first, where))
            elif (
                isinstance(func, ast.Attribute)
                and _is_client(func.value)
                and _is_command_method(name)
            ):
                found.add(name.replace("_", "|"))
    return found


def _inside_forwarder(tree: ast.Module, call: ast.Call, forwarders: dict[str, int]) -> bool:
    return any(
        isinstance(func, ast.FunctionDef) and func.name in forwarders and call in ast.walk(func)
        for func in ast.walk(tree)
    )


def test_every_command_the_scripts_call_is_listed() -> None:
    called = lua_commands()
    assert {"hset", "zrangebyscore", "time", "hincrby"} <= called  # the reader sees the calls
    assert called - set(acl.READS) - set(acl.WRITES) == set()


def test_a_command_new_to_the_scripts_would_be_caught() -> None:
    found = commands_in_lua("local n = redis.pcall( \"XADD\", k, '*', 'a', 1)", "new.lua")
    assert found == {"xadd"} and found - set(acl.READS) - set(acl.WRITES) == {"xadd"}
    with pytest.raises(AssertionError, match="not a literal"):
        commands_in_lua("redis.call(name, k)", "dynamic.lua")


def test_every_command_sent_from_python_is_listed() -> None:
    sent = python_commands()
    assert {"hgetall", "evalsha", "script|load", "info", "ping"} <= sent
    assert sent - acl.ALL_COMMANDS == set()


def test_the_lists_are_the_commands_in_use_and_nothing_more() -> None:
    used = lua_commands() | python_commands()
    assert set(acl.READS) | set(acl.WRITES) <= used
    assert len(acl.ALL_COMMANDS) == sum(
        map(
            len,
            (
                acl.CONNECTION,
                acl.SCRIPTING,
                acl.SERVER,
                acl.READS,
                acl.WRITES,
                acl.CLUSTER_DISCOVERY,
                acl.SINCE_7_2,
            ),
        )
    )  # no command listed twice


def _command_flags(client: redis.Redis, command: str) -> set[str] | None:
    """The server's flags of ``command`` (``readonly``, ``write``...), None if it has none
    such."""
    try:
        (info,) = client.execute_command("COMMAND", "INFO", command).values()  # type: ignore[no-untyped-call]
    except TypeError:  # redis-py cannot parse the nil of an unknown command
        return None
    return {str(flag) for flag in info["flags"]}


def test_the_server_knows_every_command_and_the_reads_change_nothing(
    raw_redis: redis.Redis,
) -> None:
    version = tuple(int(n) for n in raw_redis.info("server")["redis_version"].split(".")[:2])
    known = [c for c in acl.ALL_COMMANDS if version >= (7, 2) or c not in acl.SINCE_7_2]
    flags = {command: _command_flags(raw_redis, command) for command in known}
    assert [c for c, f in flags.items() if f is None] == []
    assert [c for c in acl.READS if "write" in (flags[c] or ())] == []
    assert [c for c in acl.WRITES if "write" not in (flags[c] or ())] == []


def test_the_recipe_allows_the_commands_on_the_prefix_keys_only() -> None:
    rules, since = TrackingDatabase.redis_acl("proj.a-1:x").lines
    words = shlex.split(rules)
    assert words[:3] == ["ACL", "SETUSER", acl.DEFAULT_USER]
    assert words[3:8] == ["on", "resetkeys", "resetchannels", "clearselectors", "-@all"]
    assert [w for w in words if "~" in w] == ["~{proj.a-1:x}", "~{proj.a-1:x}:*"]
    assert {w[1:] for w in words if w.startswith("+")} == acl.ALL_COMMANDS - set(acl.SINCE_7_2)
    assert not any(w.startswith((">", "<", "#", "nopass", "&", "%")) for w in words)
    assert since == f"ACL SETUSER {acl.DEFAULT_USER} +client|setinfo"


def test_the_viewer_recipe_reads_only() -> None:
    recipe = TrackingDatabase.redis_acl("proj", read_only=True)
    assert recipe.user == acl.DEFAULT_VIEWER
    words = recipe.lines[0].split()
    assert [w for w in words if "~" in w] == ["~{proj}", "%R~{proj}:*"]
    granted = {w[1:] for w in words if w.startswith("+")}
    assert granted & set(acl.WRITES) == set()
    assert set(acl.READS) <= granted and "evalsha" in granted
    assert TrackingDatabase.redis_acl("proj", "alice", True).lines[0].split()[2] == "alice"


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("two words", "invalid ACL user name 'two words': use 1-100 characters"),
        ("a:b", "invalid ACL user name"),
        ("", "invalid ACL user name"),
        ("default", "the server's own user"),
    ],
)
def test_a_bad_user_name_is_refused_with_what_is_valid(user: str, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        TrackingDatabase.redis_acl("proj", user or " ")


@pytest.mark.parametrize("prefix", ["my*proj", "a b", "{x}", "p?", "q[1]", ""])
def test_a_prefix_that_is_not_a_valid_key_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(InvalidRecordError, match=r"invalid key prefix .*letters, digits"):
        TrackingDatabase.redis_acl(prefix)


def test_glob_special_characters_are_escaped() -> None:
    assert acl.glob_escape(r"a*b?c[d]e\f") == r"a\*b\?c\[d\]e\\f"
    assert acl.glob_escape("{proj.a-1:x}") == "{proj.a-1:x}"
