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
    {p}:run:<n>:tasks         hash   packed task id -> task record, so each task counts once
                                     (the ledger's keys: lua/lib/ledger.lua)
    {p}:task:s:<letter>       set    run numbers with task records in that state
    {p}:task:n|q|w:<hash>     set    run numbers with task records of that name, queue, worker
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
    {p}:pw:ids / status:<S> / host:<h> / job:<job id>  sets of physical worker ids
    {p}:pw:name               hash   digest(name) -> id (unique)

Sets of runs hold run numbers, which Redis keeps as compact intsets (up to 512 members by
default). A field value longer than 64 bytes is split over ``name``, ``name+1``, ... so record
hashes keep the compact listpack encoding. Unique indexes are keyed by the first 12 bytes of the
value's SHA-1, so workspaces of any length or content cost the same few bytes; scripts compute
the same digest with ``redis.sha1hex``.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from merlin_tracking.ids import run_id, run_sequence
from merlin_tracking.stores.base import DEFAULT_PREFIX, check_prefix

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

ENTITY_SEGMENT = {
    "study": "study",
    "run": "run",
    "logical_worker": "lw",
    "physical_worker": "pw",
}


def digest(value: str) -> bytes:
    """Unique-index field for ``value`` (must match ``digest`` in lua/prelude.lua)."""
    return hashlib.sha1(value.encode("utf-8")).digest()[:12]


def pack_task_id(task_id: str) -> bytes:
    """Field of a task in ``{p}:run:<n>:tasks`` (``pack_id`` in lua/prelude.lua): a canonical
    lowercase UUID as its 16 bytes, any other id as its UTF-8 text, behind a NUL when that is
    16 bytes long or starts with one."""
    if len(task_id) == 36 and _UUID.fullmatch(task_id):
        return bytes.fromhex(task_id.replace("-", ""))
    raw = task_id.encode("utf-8")
    return b"\0" + raw if len(raw) == 16 or raw[:1] == b"\0" else raw


def unpack_task_id(field: bytes) -> str:
    """The task id a ``pack_task_id`` field (or a ledger's text field from before) stands for."""
    if len(field) == 16:
        return str(uuid.UUID(bytes=field))
    if field[:1] == b"\0":
        field = field[1:]
    return field.decode("utf-8")


def value_hash(value: str) -> str:
    """Key part of the run sets indexing task records by a name, queue or worker
    (``value_hash`` in lua/prelude.lua)."""
    return hashlib.sha1(value.encode("utf-8")).hexdigest()[:24]


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
