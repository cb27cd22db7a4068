"""Pipelined reads of the Redis store, led by the catch-up a reader asked for.

Readers apply what time alone made due before they read (``TrackingStore.catch_up``). On Redis
that is one more script call, so instead of a round trip of its own it leads the first pipeline
of the read that follows (``ask_catch_up``): ``get`` stays one round trip, ``get_all`` two. A
refused catch-up (a user who may only read, a replica) leaves the ledger as it is; the read
itself goes on. Scripts in a pipeline are sent by SHA; a server that forgot them (restart,
SCRIPT FLUSH) gets the ones the pipeline uses loaded and the round trip repeated, a few times at
most (``NOSCRIPT_TRIES``), then the read fails with the NOSCRIPT ``StoreRefusedError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from merlin_tracking.stores.redis.connection import store_errors
from merlin_tracking.stores.redis.scripts import NOSCRIPT_TRIES, forgotten


def same_slot(pipe: redis.client.Pipeline, command: str, keys: Sequence[str]) -> None:
    """Queue a command over several keys of one prefix (``SUNION``, ``SINTER``): a cluster
    pipeline refuses the methods of multi-key commands, though every key of a prefix shares
    its slot, but routes the plain command."""
    pipe.execute_command(command, *keys)  # type: ignore[no-untyped-call]


class Reads:
    """The store's pipelines: ``run`` queues commands and returns their replies."""

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        scripts: dict[str, Script],
        tag: str,
        url: str,
        catch_up_args: Callable[[], Sequence[Any]],
    ) -> None:
        self._client, self._scripts, self._tag, self._url = client, scripts, tag, url
        self._catch_up_args = catch_up_args
        self._pending = threading.local()
        self._used = threading.local()

    def ask_catch_up(self) -> None:
        """Lead this thread's next read with a catch-up."""
        self._pending.due = True

    def script(self, pipe: redis.client.Pipeline, name: str, args: Sequence[Any]) -> None:
        """Queue a call of script ``name`` (with the prefix tag as its KEYS[1]).

        Sent as a plain command: a cluster pipeline refuses ``evalsha()`` but routes the
        command by its key like any other."""
        self._used.names.add(name)
        sha = self._scripts[name].sha
        pipe.execute_command("EVALSHA", sha, 1, self._tag, *args)  # type: ignore[no-untyped-call]

    def run(self, queue: Callable[[redis.client.Pipeline], object]) -> list[Any]:
        """One round trip: the pending catch-up, if any, then what ``queue`` adds."""
        led = bool(getattr(self._pending, "due", False))
        self._pending.due = False
        for _ in range(NOSCRIPT_TRIES):
            self._used.names = set()
            pipe = self._client().pipeline(transaction=False)
            if led:
                self.script(pipe, "catch_up", self._catch_up_args())
            queue(pipe)
            with store_errors(self._url):
                replies = pipe.execute(raise_on_error=False)
                if not any(isinstance(reply, NoScriptError) for reply in replies):
                    break
                for name in sorted(self._used.names):
                    script = self._scripts[name]
                    script.sha = self._client().script_load(script.script)
        else:
            raise forgotten(self._url)
        if led:
            replies = replies[1:]  # a refused catch-up changes nothing the read needs
        for reply in replies:
            if isinstance(reply, Exception):
                with store_errors(self._url):
                    raise reply
        return list(replies)
