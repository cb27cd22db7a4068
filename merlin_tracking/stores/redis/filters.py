"""``find_ids`` and ``count`` of the Redis store, over the index sets of ``keys.py``.

Each filter key becomes a group: the union of one index set per value, or for a unique field
(study name, physical worker name) the ids found in its index. Groups intersect. The common
shapes are one SUNION or one SINTER, answered by Redis itself; anything else goes to the
``find_ids`` script, which reads the smallest group and probes the others, in one round trip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis

from merlin_tracking.records import Record, Run, RunStatus
from merlin_tracking.stores.base import Filters
from merlin_tracking.stores.redis.keys import ENTITY_SEGMENT, KeySpace, digest, run_id_of, text
from merlin_tracking.stores.redis.pipes import Reads, same_slot

# A group: the set keys whose union it is, or {"ids": [...]} for ids found in a unique index.
Group = list[str] | dict[str, list[str]]


def all_ids_group(keys: KeySpace, record_type: type[Record]) -> list[str]:
    """The sets whose union is every record of the type (runs are indexed by status only)."""
    if record_type is Run:
        return [keys.key("run", "status", s.value) for s in RunStatus]
    return [keys.key(ENTITY_SEGMENT[record_type.ENTITY], "ids")]


def _filter_group(
    reads: Reads, keys: KeySpace, record_type: type[Record], name: str, values: Sequence[str]
) -> Group:
    k = keys.key
    entity = record_type.ENTITY
    if entity == "run":
        prefix = {"study_id": "study", "workers": "lw"}.get(name)
        if prefix is not None:
            return [k(prefix, v, "runs") for v in values]
        return [k("run", {"status": "status", "queues": "queue"}[name], v) for v in values]
    if entity == "logical_worker":
        return [k("lw", {"name": "name", "queues": "queue"}[name], v) for v in values]
    if entity == "physical_worker":
        if name == "logical_worker_id":
            return [k("lw", v, "physical") for v in values]
        if name in ("status", "host", "job_id"):
            return [k("pw", {"job_id": "job"}.get(name, name), v) for v in values]
    # Unique fields (study name, physical worker name): resolve through the index.
    index = k(ENTITY_SEGMENT[entity], "name")
    (found,) = reads.run(lambda pipe: pipe.hmget(index, [digest(v) for v in values]))
    return {"ids": sorted({text(i) for i in found if i is not None})}


def _found_id(record_type: type[Record], member: bytes | str) -> str:
    return run_id_of(member) if record_type is Run else text(member)


def matching_ids(
    reads: Reads, keys: KeySpace, record_type: type[Record], filters: Filters
) -> list[str]:
    """Ids of the records matching ``filters`` (all of them when empty), unordered."""
    groups = [_filter_group(reads, keys, record_type, n, v) for n, v in filters.items()]
    if not groups:
        groups = [all_ids_group(keys, record_type)]
    if any(isinstance(g, dict) and not g["ids"] for g in groups):
        return []
    first = groups[0]
    if len(groups) == 1 and isinstance(first, list):
        if not first:
            return []
        (members,) = reads.run(lambda pipe: same_slot(pipe, "SUNION", first))
    elif all(isinstance(g, list) and len(g) == 1 for g in groups):
        # One index per filter key: Redis's own SINTER walks the smallest set.
        firsts = [g[0] for g in groups if isinstance(g, list)]
        (members,) = reads.run(lambda pipe: same_slot(pipe, "SINTER", firsts))
    else:
        payload = json.dumps(groups, ensure_ascii=False)
        (members,) = reads.run(lambda pipe: reads.script(pipe, "find_ids", [payload]))
    return [_found_id(record_type, m) for m in members]


def count_records(reads: Reads, keys: KeySpace, record_type: type[Record]) -> int:
    """Number of records of a type: one pipelined SCARD per set of ``all_ids_group``."""

    def queue(pipe: redis.client.Pipeline) -> None:
        for key in all_ids_group(keys, record_type):
            pipe.scard(key)

    return sum(int(n) for n in reads.run(queue))
