"""Redis implementation of the store contract (see ``stores/base.py`` and ``keys.py``).

Every write is one Lua script call (``lua/``): atomic, one round trip, and correct with any
number of concurrent writers. ``RedisStore`` maps the contract onto those calls; the parts with
more to them than a call and a status check sit beside it, so each reads on its own: creation
and its retries (``creation.py``), records decoded from replies (``reads.py``), filters
(``filters.py``) and garbage collection (``maintenance.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import redis

from merlin_tracking.errors import (
    EntityNotFoundError,
    RunNotFoundError,
    StoreError,
    StudyNotFoundError,
    WorkerNotFoundError,
)
from merlin_tracking.ids import id_sort_key, run_id
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Record,
    Run,
    RunStatus,
    Study,
    Task,
)
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.records.task import task_matches
from merlin_tracking.stores.base import (
    BEAT_CATCH_UP_EVERY,
    DEFAULT_PREFIX,
    CatchUp,
    DanglingReference,
    Filters,
    TrackingStore,
)
from merlin_tracking.stores.redis import creation, ledger, maintenance, reads, scripts
from merlin_tracking.stores.redis.clients import server_of
from merlin_tracking.stores.redis.clients import topology_of as check_url
from merlin_tracking.stores.redis.connection import client_for, store_errors
from merlin_tracking.stores.redis.filters import count_records, matching_ids
from merlin_tracking.stores.redis.keys import ENTITY_SEGMENT, KeySpace, run_id_of, run_member, text
from merlin_tracking.stores.redis.pipes import Reads
from merlin_tracking.urls import mask_url

R = TypeVar("R", bound=Record)

#: Records deleted per script call: a script blocks Redis while it runs, so each stays short.
DELETE_BATCH = 500

_NOT_FOUND: dict[str, type[EntityNotFoundError]] = {
    "study": StudyNotFoundError,
    "run": RunNotFoundError,
    "logical_worker": WorkerNotFoundError,
    "physical_worker": WorkerNotFoundError,
}


def _updated_at() -> str:
    return Run.encode_field("updated_at", datetime.now(timezone.utc))


class RedisStore(TrackingStore):
    """Studies, runs and workers under one key prefix of a Redis database."""

    backend = "redis"

    def __init__(
        self, url: str, prefix: str = DEFAULT_PREFIX, timeout: float | None = None
    ) -> None:
        self.url = mask_url(url)
        check_url(url)  # a malformed URL is refused now, not at the first command
        self.keys = KeySpace(prefix)
        self._raw_url = url
        self._timeout = timeout
        self._ledgers_indexed = False
        self._scripts = scripts.register()
        self._reads = Reads(
            lambda: self.client, self._scripts, self.keys.tag, self.url, lambda: [_updated_at()]
        )

    @property
    def client(self) -> redis.Redis:
        # Looked up per call so a forked child gets its own connection pool.
        return client_for(self._raw_url, self._timeout)

    def _run(self, name: str, args: Sequence[Any]) -> Any:
        # The prefix's hash tag is every script's KEYS[1]: it routes the call on a cluster.
        with store_errors(self.url):
            return scripts.run(self.client, self._scripts[name], [self.keys.tag], args, self.url)

    # ------------------------------------------------------------------ writes
    def create_study(self, study: Study) -> tuple[str, bool]:
        return creation.create_study(self._run, study)

    def create_run(self, run: Run, keep_id: bool = False, study: Study | None = None) -> Run:
        return creation.create_run(self._run, run, keep_id, study)

    def add_run_queues(self, run_id: str, queues: Sequence[str]) -> Run:
        result = self._run("add_run_queues", [run_member(run_id), *queues])
        if result[0] == -1:
            raise RunNotFoundError(run_id)
        run = self.fetch(Run, run_id)
        if run is None:  # deleted in between
            raise RunNotFoundError(run_id)
        return run

    def create_logical_worker(self, worker: LogicalWorker) -> bool:
        return creation.create_logical_worker(self._run, worker)

    def upsert_physical_worker(
        self, candidate: PhysicalWorker, given: frozenset[str]
    ) -> tuple[PhysicalWorker, str]:
        worker_id, outcome = creation.upsert_physical_worker(self._run, candidate, given)
        worker = self.fetch(PhysicalWorker, worker_id)
        if worker is None:  # deleted in between
            raise WorkerNotFoundError(candidate.name)
        return worker, outcome

    def update_fields(
        self,
        record_type: type[Run | PhysicalWorker],
        record_id: str,
        changes: Mapping[str, Any],
    ) -> None:
        encoded = {name: self._encode_or_clear(record_type, name, v) for name, v in changes.items()}
        segment = ENTITY_SEGMENT[record_type.ENTITY]
        member = run_member(record_id) if record_type is Run else record_id
        result = self._run("update_fields", [segment, member, *scripts.pairs(encoded)])
        if result == -1:
            raise _NOT_FOUND[record_type.ENTITY](record_id)
        if result == -2:
            raise WorkerNotFoundError(str(changes.get("logical_worker_id")))

    @staticmethod
    def _encode_or_clear(record_type: type[Record], name: str, value: Any) -> str:
        """JSON text of a field, or "" (delete the field) when the value is its empty default,
        matching ``Record.to_fields``; an empty list stored over a None default is kept."""
        encoded = record_type.encode_field(name, value)
        defaults = record_type.storage_defaults()
        if name in defaults and record_type.encode_field(name, defaults[name]) == encoded:
            return ""
        return encoded

    def link_run_worker(self, run_id: str, worker_id: str, linked: bool = True) -> bool:
        result = self._run(
            "link_run_worker", [run_member(run_id), worker_id, "1" if linked else "0"]
        )
        if result == -1:
            raise RunNotFoundError(run_id)
        if result == -2:
            raise WorkerNotFoundError(worker_id)
        return bool(result)

    def apply_task_events(
        self,
        events: Sequence[TaskEvent],
        settle: float = 0.0,
        workspaces: Mapping[str, str] | None = None,
    ) -> list[str]:
        if not events:
            return []
        members = {run_id: run_member(run_id) for run_id in {event.run_id for event in events}}
        by_member = {member: run_id for run_id, member in members.items()}
        payload = json.dumps(
            [event.to_json(members[event.run_id]) for event in events], ensure_ascii=False
        )
        settle_micros = max(0, round(settle * 1_000_000))
        args: list[Any] = [payload, _updated_at(), settle_micros]
        if workspaces:
            known = {
                members[r]: Run.encode_field("workspace", w)
                for r, w in workspaces.items()
                if r in members
            }
            args.append(json.dumps(known, ensure_ascii=False))
        missing = self._run("task_events", args)
        return [by_member.get(text(member), run_id_of(member)) for member in missing]

    def catch_up_before_read(self) -> None:
        self._reads.ask_catch_up()

    def catch_up(self) -> CatchUp:
        completed, stalled = self._run("catch_up", [_updated_at()])
        return CatchUp(tuple(run_id_of(m) for m in completed), tuple(text(w) for w in stalled))

    def stop_worker(self, worker_id: str, at: datetime) -> PhysicalWorker:
        stamp = PhysicalWorker.encode_field("heartbeat_timestamp", at)
        if not self._run("stop_worker", [worker_id, stamp]):
            raise WorkerNotFoundError(worker_id)
        worker = self.fetch(PhysicalWorker, worker_id)
        if worker is None:  # deleted in between
            raise WorkerNotFoundError(worker_id)
        return worker

    def refresh_runs_on_queues(self, queues: Sequence[str]) -> None:
        if queues:
            self._run("refresh_runs_on_queues", list(queues))

    def change_publishing(self, run_id: str, delta: int) -> RunStatus | None:
        status = self._run("change_publishing", [run_member(run_id), delta, _updated_at()])
        return RunStatus(text(status)) if status else None

    def set_run_status(
        self, run_id: str, status: RunStatus, allowed_from: Sequence[RunStatus]
    ) -> tuple[bool, RunStatus]:
        allowed = [s.value for s in allowed_from]
        result = self._run(
            "set_run_status", [run_member(run_id), status.value, _updated_at(), *allowed]
        )
        if result[0] == -1:
            raise RunNotFoundError(run_id)
        return result[0] == 1, RunStatus(text(result[1]))

    def attach_worker_to_runs(self, worker_id: str) -> list[str]:
        return [run_id_of(member) for member in self._run("attach_worker_to_runs", [worker_id])]

    def heartbeat(self, worker_id: str, at: datetime) -> bool:
        stamp = PhysicalWorker.encode_field("heartbeat_timestamp", at)
        return bool(self._run("heartbeat", [worker_id, stamp]))

    def beat(self, worker_id: str, at: datetime, every: float = BEAT_CATCH_UP_EVERY) -> bool:
        # The heartbeat answers 2 to the first beat of the ledger in ``every`` seconds (a key
        # that expires: {P}:catch_up:due), whose beacon then applies the catch-up.
        stamp = PhysicalWorker.encode_field("heartbeat_timestamp", at)
        answer = self._run("heartbeat", [worker_id, stamp, str(max(1, round(every * 1000)))])
        if answer == 2:
            self.catch_up()
        return bool(answer)

    def find_dangling(self) -> list[DanglingReference]:
        return maintenance.find_dangling(self)

    def remove_dangling(self, references: Sequence[DanglingReference]) -> int:
        ops = maintenance.repair_ops(self.keys, references)
        if not ops:
            return 0
        self._run("repair", [json.dumps(ops, ensure_ascii=False)])
        return len(references)

    def _delete_in_batches(self, script: str, ids: Sequence[str]) -> int:
        deleted = 0
        for start in range(0, len(ids), DELETE_BATCH):
            deleted += int(self._run(script, list(ids[start : start + DELETE_BATCH])))
        return deleted

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        return self._delete_in_batches("delete_runs", [run_member(i) for i in run_ids])

    def delete_study(self, study_id: str, remove_runs: bool) -> bool:
        while True:
            status, *_ = self._run(
                "delete_study", [study_id, "1" if remove_runs else "0", DELETE_BATCH]
            )
            if status != 2:
                return bool(status == 1)

    def delete_logical_workers(self, worker_ids: Sequence[str]) -> int:
        return self._delete_in_batches("delete_logical_workers", worker_ids)

    def delete_physical_workers(self, worker_ids: Sequence[str]) -> int:
        return self._delete_in_batches("delete_physical_workers", worker_ids)

    # ------------------------------------------------------------------ the task ledger
    def run_tasks(self, run_id: str) -> list[Task]:
        return ledger.run_tasks(self._reads, self.keys, run_id)

    def find_tasks(
        self, filters: Mapping[str, Sequence[str]], limit: int | None = None
    ) -> list[Task]:
        run_filter = {"queues": list(filters["queue"])} if "queue" in filters else {}
        run_ids = self.find_ids(Run, run_filter)
        if "run_id" in filters:
            asked = set(filters["run_id"])
            run_ids = [r for r in run_ids if r in asked]
        sets = ledger.index_keys(self.keys, filters)
        if not sets or not self._index_old_ledgers():
            return self._scan_tasks(run_ids, filters, limit)
        flat = [k for names in sets.values() for k in names]
        members = self._reads.run(lambda pipe: [pipe.smembers(k) for k in flat])
        by_key = dict(zip(flat, members, strict=True))
        candidates = set(run_ids)
        for names in sets.values():
            candidates &= {run_id_of(m) for k in names for m in by_key[k]}
        ordered = sorted(candidates, key=id_sort_key)
        return ledger.find_tasks(self._reads, self.keys, ordered, filters, limit)

    def _scan_tasks(
        self, run_ids: Sequence[str], filters: Mapping[str, Sequence[str]], limit: int | None
    ) -> list[Task]:
        """Every record of each run, filtered here: for filters no index answers (``run_id``
        alone) and for readers who cannot index older ledgers."""
        found: list[Task] = []
        for one in sorted(run_ids, key=id_sort_key):
            found += [t for t in self.run_tasks(one) if task_matches(t, filters)]
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    def _index_old_ledgers(self) -> bool:
        """Give the row index to ledgers written before it existed, once per prefix (a marker
        key says it is done); False when the server refuses (a user who may only read)."""
        if self._ledgers_indexed:
            return True
        marker = self.keys.key("task", "indexed")
        try:
            with store_errors(self.url):
                if not self.client.exists(marker):
                    members = [run_member(r) for r in self.find_ids(Run, {})]
                    for start in range(0, len(members), DELETE_BATCH):
                        self._run("index_ledgers", members[start : start + DELETE_BATCH])
                    self.client.set(marker, "1")
        except StoreError:
            return False
        self._ledgers_indexed = True
        return True

    def migrate(self) -> dict[str, int]:
        self.catch_up()  # moves wave 1's set of settling runs, among what is due
        members = [run_member(r) for r in self.find_ids(Run, {})]
        upgraded = indexed = 0
        for start in range(0, len(members), DELETE_BATCH):
            done = self._run("migrate_runs", members[start : start + DELETE_BATCH])
            upgraded, indexed = upgraded + int(done[0]), indexed + int(done[1])
        with store_errors(self.url):
            self.client.set(self.keys.key("task", "indexed"), "1")
        self._ledgers_indexed = True
        return {"runs": len(members), "runs_upgraded": upgraded, "ledgers_indexed": indexed}

    def find_task(self, task_id: str) -> Task | None:
        indexed = self._index_old_ledgers()
        newest_first = sorted(self.find_ids(Run, {}), key=id_sort_key, reverse=True)
        return ledger.find_task(self._reads, self.keys, newest_first, task_id, not indexed)

    def delete_task(self, run_id: str, task_id: str) -> bool:
        return bool(self._run("delete_task", [run_member(run_id), task_id]))

    def take_message(self, run_id: str, task_id: str) -> str | None:
        found = self._run("take_message", [run_member(run_id), task_id])
        return text(found) if found else None

    def kept_message_ids(self, run_id: str) -> set[str]:
        key = self.keys.key("run", run_member(run_id), "msgs")
        (found,) = self._reads.run(lambda pipe: pipe.hkeys(key))
        return {text(task_id) for task_id in found}

    def keep_message(self, run_id: str, task_id: str, message: str) -> bool:
        return bool(self._run("keep_message", [run_member(run_id), task_id, message]))

    # ------------------------------------------------------------------ reads
    def fetch(self, record_type: type[R], id_or_key: str) -> R | None:
        args = reads.fetch_args(record_type, id_or_key)
        (reply,) = self._reads.run(lambda pipe: self._reads.script(pipe, "fetch", args))
        return reads.decode_fetch(record_type, reply)

    def fetch_many(self, record_type: type[R], ids: Sequence[str]) -> list[R]:
        return reads.fetch_many(self._reads, self.keys, record_type, ids)

    def find_ids(self, record_type: type[Record], filters: Filters) -> list[str]:
        return matching_ids(self._reads, self.keys, record_type, filters)

    def count(self, record_type: type[Record]) -> int:
        return count_records(self._reads, self.keys, record_type)

    def recent_run_ids(self, limit: int) -> list[str]:
        with store_errors(self.url):
            members = [text(m) for m in self.client.lrange(self.keys.key("run", "recent"), 0, -1)]
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.exists(self.keys.record("run", member))
            alive = pipe.execute()
        unique = {int(m) for m, ok in zip(members, alive, strict=True) if ok}
        return [run_id(n) for n in sorted(unique, reverse=True)[:limit]]

    def server_info(self) -> dict[str, Any]:
        with store_errors(self.url):
            node = server_of(self.client, self.keys.tag)
            info = self.client.info("server", **node)
            memory = self.client.info("memory", **node)
        return {
            "server": "redis",
            "server_version": info.get("redis_version"),
            "used_memory_human": memory.get("used_memory_human"),
            "prefix": self.keys.prefix,
        }

    def ping(self) -> None:
        with store_errors(self.url):
            self.client.ping(**server_of(self.client, self.keys.tag))
