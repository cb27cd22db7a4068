"""Loads the Lua scripts of ``scripts.lua`` and registers them on a client.

Each script is the shared helper block plus one entry point; redis-py's ``Script`` runs it with
EVALSHA and reloads it if the server forgot it (restart, SCRIPT FLUSH).
"""

from __future__ import annotations

from importlib import resources

import redis
from redis.commands.core import Script

_MARKER = "\n--@@ "


def _sources() -> dict[str, str]:
    text = resources.files(__package__).joinpath("scripts.lua").read_text(encoding="utf-8")
    helpers, *bodies = text.split(_MARKER)
    sources = {}
    for body in bodies:
        name, _, code = body.partition("\n")
        sources[name.strip()] = helpers + code
    return sources


SOURCES = _sources()


def register(client: redis.Redis) -> dict[str, Script]:
    return {name: client.register_script(source) for name, source in SOURCES.items()}
