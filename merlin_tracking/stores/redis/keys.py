"""Key layout of the Redis store, written down once for the Python side and the Lua scripts.

Every key is ``{prefix}:...``: the braces make the prefix a Redis Cluster hash tag, so all keys
of one prefix live in one slot. Every script is called with the bare tag ``{prefix}``
(``KeySpace.tag``) as its only key, which routes it to that slot, so the scripts run unchanged on
a cluster. Nothing outside the prefix is ever read, scanned or deleted.

    {p}:study:<id>            hash   study fields (JSON per field)
    {p}:study:<id>:runs       set    run numbers of the study (also the ``study_id`` index)
    {p}:study:ids             set    all study ids
    {p}:study:name            hash   digest(name) -> id (unique)
    {p}:run:seq               string the run sequence: run "r<n>" is stored as <n>
    {p}:run:<n>               hash   run fields; ``workers`` and ``queues`` are JSON lists,
                                     task counters are plain integers (HINCRBY)
    {p}:run:<n>:tasks         hash   task id -> state letter, so each task counts once
    {p}:run:status:<S>        set    run numbers by status (their union is every run)
    {p}:run:queue:<q>         set    run numbers by queue
    {p}:run:workspace         hash   digest(workspace) -> id (unique)
    {p}:run:recent            list   newest run ids, capped (for ``info``)
    {p}:lw:<id>               hash   logical worker fields
    {p}:lw:<id>:runs          set    run numbers served (also the run ``workers`` index)
    {p}:lw:<id>:physical      set    physical worker ids
    {p}:lw:ids / name:<n> / queue:<q>   sets of logical worker ids
    {p}:pw:<id>               hash   physical worker fields
    {p}:pw:<id>:alive         string liveness, expires ``stale_after`` seconds after a heartbeat
    {p}:pw:ids / status:<S> / host:<h>  sets of physical worker ids
    {p}:pw:name               hash   digest(name) -> id (unique)

Sets of runs hold run numbers, which Redis keeps as compact intsets (up to 512 members by
default). A field value longer than 64 bytes is split over ``name``, ``name+1``, ... so record
hashes keep the compact listpack encoding. Unique indexes are keyed by the first 12 bytes of the
value's SHA-1, so workspaces of any length or content cost the same few bytes; scripts compute
the same digest with ``redis.sha1hex``.
"""

from __future__ import annotations

import hashlib

from merlin_tracking.ids import run_id, run_sequence
from merlin_tracking.stores.base import DEFAULT_PREFIX, check_prefix

ENTITY_SEGMENT = {
    "study": "study",
    "run": "run",
    "logical_worker": "lw",
    "physical_worker": "pw",
}


def digest(value: str) -> bytes:
    """Unique-index field for ``value`` (must match ``digest`` in lua/prelude.lua)."""
    return hashlib.sha1(value.encode("utf-8")).digest()[:12]


def text(value: bytes | str) -> str:
    """A member, field or id of a reply as text (the client returns bytes)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def run_member(record_id: str) -> str:
    """Member of Redis sets and key part for a run id; "0" (never allocated) if not a run id."""
    return run_sequence(record_id) or "0"


def run_id_of(member: bytes | str) -> str:
    """The run id of a run number read back from a set, a key or a script's reply."""
    return run_id(text(member))


def tagged_prefix(prefix: str) -> str:
    """``{prefix}``: the prefix as a Redis Cluster hash tag (see ``check_prefix``)."""
    return "{" + check_prefix(prefix) + "}"


class KeySpace:
    """Builds the keys of one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.tag = tagged_prefix(prefix)

    def key(self, *parts: str) -> str:
        return ":".join((self.tag, *parts))

    def record(self, entity: str, record_id: str) -> str:
        return self.key(ENTITY_SEGMENT[entity], record_id)
