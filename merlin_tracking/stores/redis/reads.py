"""Records read back from Redis: the ``fetch`` script's arguments and reply, and pipelined pages.

Decoding lives here, apart from the writes, because it must mirror how the scripts store a
record: runs are kept by sequence number, relations sit in sets beside the record hash, and a
RUNNING physical worker whose liveness key expired reads as STALLED. Every stored value is a JSON
text, so a record's fields are parsed as one JSON object: one C-speed parse per record, then
the schema's conversions (``Record.from_values``), not a parse per field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import redis

from merlin_tracking.ids import looks_like_id
from merlin_tracking.records import PhysicalWorker, Record, Run, WorkerStatus
from merlin_tracking.stores.redis.keys import (
    ENTITY_SEGMENT,
    KeySpace,
    digest,
    run_id_of,
    run_member,
    text,
)
from merlin_tracking.stores.redis.pipes import Reads

R = TypeVar("R", bound=Record)

#: Records read per pipelined round trip by ``fetch_many``.
PAGE_SIZE = 1000

# Where each record type keeps its relationship sets and its unique index.
RELATION_SUFFIX = {"runs": "runs", "physical_workers": "physical"}
_UNIQUE_INDEX = {"study": "name", "run": "workspace", "physical_worker": "name"}


def with_liveness(worker: PhysicalWorker, alive: bool) -> PhysicalWorker:
    """A RUNNING worker whose liveness key expired reads as STALLED."""
    if worker.status is WorkerStatus.RUNNING and worker.stale_after is not None and not alive:
        return worker.replace(status=WorkerStatus.STALLED)
    return worker


def relation_ids(name: str, members: Sequence[bytes | str]) -> list[str]:
    # ``runs`` sets hold run sequence numbers; other relations hold ids as they are.
    if name == "runs":
        return [run_id_of(m) for m in members]
    return [text(m) for m in members]


def fetch_args(record_type: type[Record], id_or_key: str) -> list[Any]:
    """ARGV of the ``fetch`` script: try ``id_or_key`` as an id, then in the unique index."""
    entity = record_type.ENTITY
    unique = _UNIQUE_INDEX.get(entity, "")
    # Only id-shaped strings are tried as ids, so a workspace such as "status:RUNNING" can
    # never be mistaken for one of the index keys that live beside the records.
    candidate = ""
    if looks_like_id(id_or_key):
        candidate = run_member(id_or_key) if record_type is Run else id_or_key
    return [
        ENTITY_SEGMENT[entity],
        candidate,
        unique,
        digest(id_or_key) if unique else "",
        *(RELATION_SUFFIX[name] for name in record_type.RELATIONS),
    ]


def stored_values(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A record hash as read (HGETALL) to field values: every stored value is a JSON text, so
    the fields are joined into one JSON object (values the scripts split over ``name``,
    ``name+1``... joined back first) and parsed at once, at C speed."""
    chunked = [name for name in raw if b"+" in name]
    if chunked:
        raw = _joined(raw, chunked)
    values: dict[str, Any] = json.loads(
        b"{" + b",".join([b'"%s":%s' % item for item in raw.items()]) + b"}"
    )
    return values


def _joined(raw: Mapping[bytes, bytes], chunked: Sequence[bytes]) -> dict[bytes, bytes]:
    parts: dict[bytes, dict[int, bytes]] = {}
    whole = {name: value for name, value in raw.items() if b"+" not in name}
    for name in chunked:
        base, _, index = name.rpartition(b"+")
        parts.setdefault(base, {})[int(index)] = raw[name]
    for base, chunks in parts.items():
        whole[base] = whole[base] + b"".join(chunks[i] for i in sorted(chunks))
    return whole


def decode_fetch(record_type: type[R], reply: Sequence[Any]) -> R | None:
    """The record in a ``fetch`` reply: id, field count, fields, then each relation's members."""
    if not reply:
        return None
    record_id = run_id_of(reply[0]) if record_type is Run else text(reply[0])
    n_flat = int(reply[1])
    flat = reply[2 : 2 + n_flat]
    values = stored_values({flat[i]: flat[i + 1] for i in range(0, n_flat, 2)})
    relations: dict[str, list[str]] = {}
    pos = 2 + n_flat
    for name in record_type.RELATIONS:
        count = int(reply[pos])
        relations[name] = relation_ids(name, reply[pos + 1 : pos + 1 + count])
        pos += 1 + count
    record = record_type.from_values(record_id, values, relations)
    if isinstance(record, PhysicalWorker):
        return with_liveness(record, bool(reply[pos]))  # type: ignore[return-value]
    return record


def iter_many(
    reads: Reads, keys: KeySpace, record_type: type[R], ids: Sequence[str]
) -> Iterator[list[R]]:
    """Records for ``ids`` in order, missing ones skipped: a page (one pipelined round trip of
    HGETALL, plus the relation sets and liveness keys where the type has them) at a time."""
    entity = record_type.ENTITY
    segment = ENTITY_SEGMENT[entity]
    relations = record_type.RELATIONS
    liveness = int(record_type is PhysicalWorker)
    is_run = record_type is Run
    step = 1 + len(relations) + liveness
    for start in range(0, len(ids), PAGE_SIZE):
        page = ids[start : start + PAGE_SIZE]

        def queue(pipe: redis.client.Pipeline, page: Sequence[str] = page) -> None:
            for record_id in page:
                member = run_member(record_id) if is_run else record_id
                pipe.hgetall(keys.record(entity, member))
                for name in relations:
                    pipe.smembers(keys.key(segment, member, RELATION_SUFFIX[name]))
                if liveness:
                    pipe.exists(keys.key("pw", member, "alive"))

        replies = reads.run(queue)
        records: list[R] = []
        for index, record_id in enumerate(page):
            base = index * step
            raw = replies[base]
            if not raw:
                continue
            rel = {
                name: relation_ids(name, replies[base + 1 + n]) for n, name in enumerate(relations)
            }
            record = record_type.from_values(record_id, stored_values(raw), rel)
            if isinstance(record, PhysicalWorker):
                record = with_liveness(record, bool(replies[base + step - 1]))  # type: ignore[assignment]
            records.append(record)
        yield records


def fetch_many(reads: Reads, keys: KeySpace, record_type: type[R], ids: Sequence[str]) -> list[R]:
    """Records for ``ids`` in order, missing ones skipped."""
    return [record for page in iter_many(reads, keys, record_type, ids) for record in page]
