"""Dangling references: impossible through the scripts, which change both sides of a relation
together, yet left behind by keys removed by hand or by an older version. Garbage collection
finds them here by reading everything, then drops them with the ``repair`` script in one step.
"""

from __future__ import annotations

from collections.abc import Sequence

from merlin_tracking.records import LogicalWorker, PhysicalWorker, Run, Study
from merlin_tracking.stores.base import DanglingReference, TrackingStore
from merlin_tracking.stores.redis.filters import all_ids_group
from merlin_tracking.stores.redis.keys import KeySpace, run_member
from merlin_tracking.stores.redis.reads import RELATION_SUFFIX


def find_dangling(store: TrackingStore) -> list[DanglingReference]:
    """References to records that do not exist, read through the store's own reads."""
    # Runs are listed by the status index, so a run number left in it without its run shows.
    indexed_runs = set(store.find_ids(Run, {}))
    runs = store.fetch_many(Run, sorted(indexed_runs))
    run_ids = {run.id for run in runs}
    studies = store.fetch_many(Study, sorted(store.find_ids(Study, {})))
    study_ids = {study.id for study in studies}
    logical = store.fetch_many(LogicalWorker, sorted(store.find_ids(LogicalWorker, {})))
    logical_ids = {worker.id for worker in logical}
    physical = store.fetch_many(PhysicalWorker, sorted(store.find_ids(PhysicalWorker, {})))
    physical_ids = {worker.id for worker in physical}
    found = [DanglingReference("index", "run status", "runs", i) for i in indexed_runs - run_ids]
    for run in runs:
        if run.study_id is not None and run.study_id not in study_ids:
            found.append(DanglingReference("run", run.id, "study_id", run.study_id))
        found += [
            DanglingReference("run", run.id, "workers", w)
            for w in run.workers
            if w not in logical_ids
        ]
    for study in studies:
        found += [
            DanglingReference("study", study.id, "runs", r) for r in study.runs if r not in run_ids
        ]
    for worker in logical:
        found += [
            DanglingReference("logical_worker", worker.id, "runs", r)
            for r in worker.runs
            if r not in run_ids
        ]
        found += [
            DanglingReference("logical_worker", worker.id, "physical_workers", p)
            for p in worker.physical_workers
            if p not in physical_ids
        ]
    for pw in physical:
        if pw.logical_worker_id is not None and pw.logical_worker_id not in logical_ids:
            found.append(
                DanglingReference(
                    "physical_worker", pw.id, "logical_worker_id", pw.logical_worker_id
                )
            )
    return found


def repair_ops(keys: KeySpace, references: Sequence[DanglingReference]) -> list[list[str]]:
    """The ``repair`` script's operations that drop ``references``."""
    k = keys.key
    ops: list[list[str]] = []
    for ref in references:
        if ref.owner_type == "index":
            ops += [["srem", key, run_member(ref.missing)] for key in all_ids_group(keys, Run)]
        elif ref.owner_type == "run" and ref.field == "study_id":
            ops.append(["hset", k("run", run_member(ref.owner_id)), "study_id", "null"])
        elif ref.owner_type == "run":
            ops.append(["list_remove", k("run", run_member(ref.owner_id)), "workers", ref.missing])
        elif ref.owner_type == "study":
            ops.append(["srem", k("study", ref.owner_id, "runs"), run_member(ref.missing)])
        elif ref.owner_type == "logical_worker":
            suffix = RELATION_SUFFIX[ref.field]
            missing = run_member(ref.missing) if ref.field == "runs" else ref.missing
            ops.append(["srem", k("lw", ref.owner_id, suffix), missing])
        elif ref.owner_type == "physical_worker":
            ops.append(["hdel", k("pw", ref.owner_id), "logical_worker_id"])
    return ops
