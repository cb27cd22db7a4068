"""Loads the Lua scripts of ``lua/`` and registers them on a client.

The scripts live in one file per kind of record so each reads on its own; ``prelude.lua`` holds
the helpers they all share, ``lib/*.lua`` the larger ones some share (the task ledger, run
status), each once. A file may start with ``--@uses lib lib...``, then holds helpers of its own
(above its first ``--@@ name`` marker line) and then its scripts, one per marker. Each
registered script is the prelude, the libraries its file uses (in that order), its file's
helpers and its body: Redis runs every script in isolation, so each carries what it uses.
``run`` sends it with EVALSHA and, if the server forgot it (a restart, SCRIPT FLUSH), loads it
and sends it again: NOSCRIPT means the script did not run, so sending it again applies it
once. A server that keeps forgetting (SCRIPT FLUSH in a loop) gets a few tries, then the call
fails with ``StoreRefusedError`` (code NOSCRIPT), which workers ride out by buffering.

Every script takes the tagged prefix ``{prefix}`` as ``KEYS[1]``, which is all a Redis Cluster
client needs to route it to the slot holding every key of that prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from merlin_tracking.errors import StoreRefusedError

#: Runs one script by name with its ARGV and returns the reply (``RedisStore._run``).
RunScript = Callable[[str, Sequence[Any]], Any]

#: Times a call is sent after a NOSCRIPT answer, its script loaded again before each.
NOSCRIPT_TRIES = 5

_MARKER = "\n--@@ "
_USES = "--@uses "
_PRELUDE = "prelude.lua"


def _sources() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("lua")
    prelude = folder.joinpath(_PRELUDE).read_text(encoding="utf-8")
    library = folder.joinpath("lib")
    sources: dict[str, str] = {}
    for file in sorted(folder.iterdir(), key=lambda f: f.name):
        if not file.name.endswith(".lua") or file.name == _PRELUDE:
            continue
        text = file.read_text(encoding="utf-8")
        libraries = ""
        if text.startswith(_USES):
            uses, _, text = text.partition("\n")
            libraries = "".join(
                library.joinpath(f"{name}.lua").read_text(encoding="utf-8")
                for name in uses[len(_USES) :].split()
            )
        helpers, *bodies = text.split(_MARKER)
        for body in bodies:
            name, _, code = body.partition("\n")
            name = name.strip()
            if name in sources:
                raise RuntimeError(f"Lua script {name!r} is defined twice (again in {file.name})")
            sources[name] = prelude + libraries + helpers + code
    return sources


SOURCES = _sources()


def pairs(fields: Mapping[str, str]) -> list[str]:
    """Fields as the flat ``name, value, name, value...`` ARGV tail the scripts read."""
    return [item for pair in fields.items() for item in pair]


def register() -> dict[str, Script]:
    """The scripts as redis-py ``Script`` objects. Every call names the client that runs it;
    the client given here (never connected) only lends its encoder for the SHA, so opening a
    store connects to nothing (a cluster client would, at once)."""
    encoding_only = redis.Redis()
    return {name: Script(encoding_only, source) for name, source in SOURCES.items()}


def run(
    client: redis.Redis, script: Script, keys: Sequence[Any], args: Sequence[Any], url: str
) -> Any:
    """EVALSHA ``script``, loading it again each time the server answers NOSCRIPT (see the
    module docstring); ``url`` (masked) names the store in the refusal."""
    for _ in range(NOSCRIPT_TRIES):
        try:
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            script.sha = client.script_load(script.script)
    raise forgotten(url)


def forgotten(url: str) -> StoreRefusedError:
    """The refusal of a server that forgot the scripts again as soon as they were loaded."""
    return StoreRefusedError(
        url,
        f"NOSCRIPT the server forgot the ledger's Lua scripts {NOSCRIPT_TRIES} times in a row, "
        "right after they were loaded (SCRIPT FLUSH in a loop, or a failover between "
        "servers?); try again once it keeps them",
        "NOSCRIPT",
    )
