"""Redis implementation of the store contract (see ``stores/base.py`` and ``keys.py``).

Every write is one Lua script call: atomic, one round trip, and correct with any number of
concurrent writers. Reads of many records are pipelined in pages, one round trip per page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import redis

from merlin_tracking.errors import (
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidRecordError,
    RunNotFoundError,
    StoreError,
    StoreUnavailableError,
    StudyNotFoundError,
    WorkerNotFoundError,
)
from merlin_tracking.ids import looks_like_id, new_id, run_id, run_sequence
from merlin_tracking.records import (
    LogicalWorker,
    PhysicalWorker,
    Record,
    Run,
    RunStatus,
    Study,
    WorkerStatus,
)
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.stores.base import DEFAULT_PREFIX, DanglingReference, Filters, TrackingStore
from merlin_tracking.stores.redis import scripts
from merlin_tracking.stores.redis.connection import client_for
from merlin_tracking.stores.redis.keys import ENTITY_SEGMENT, KeySpace, digest
from merlin_tracking.urls import mask_url

R = TypeVar("R", bound=Record)

PAGE_SIZE = 1000
DELETE_BATCH = 500
_ID_CLASH_RETRIES = 5

# Where each record type keeps its relationship sets and its unique index.
_RELATION_SUFFIX = {"runs": "runs", "physical_workers": "physical"}
_UNIQUE_INDEX = {"study": "name", "run": "workspace", "physical_worker": "name"}
_NOT_FOUND: dict[str, type[EntityNotFoundError]] = {
    "study": StudyNotFoundError,
    "run": RunNotFoundError,
    "logical_worker": WorkerNotFoundError,
    "physical_worker": WorkerNotFoundError,
}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _seq(record_id: str) -> str:
    """Member of Redis sets and key part for a run id; "0" (never allocated) if not a run id."""
    return run_sequence(record_id) or "0"


def _rid(member: bytes | str) -> str:
    return run_id(_text(member))


def _join_chunks(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    """Record fields from HGETALL, with values split by the scripts (``name+1``...) rejoined."""
    parts: dict[str, dict[int, bytes]] = {}
    for raw_name, value in raw.items():
        name = _text(raw_name)
        base, plus, index = name.rpartition("+")
        if plus and index.isdigit():
            parts.setdefault(base, {})[int(index)] = value
        else:
            parts.setdefault(name, {})[0] = value
    return {
        name: b"".join(chunks[i] for i in sorted(chunks)).decode("utf-8")
        for name, chunks in parts.items()
    }


def _pairs(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _with_liveness(worker: PhysicalWorker, alive: bool) -> PhysicalWorker:
    """A RUNNING worker whose liveness key expired reads as STALLED."""
    if worker.status is WorkerStatus.RUNNING and worker.stale_after is not None and not alive:
        return worker.replace(status=WorkerStatus.STALLED)
    return worker


class RedisStore(TrackingStore):
    """Studies, runs and workers under one key prefix of a Redis database."""

    backend = "redis"

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = mask_url(url)
        self.keys = KeySpace(prefix)
        self._raw_url = url
        self._scripts = scripts.register(client_for(url))

    @property
    def client(self) -> redis.Redis:
        # Looked up per call so a forked child gets its own connection pool.
        return client_for(self._raw_url)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailableError(self.url, str(exc) or type(exc).__name__) from None
        except redis.exceptions.NoPermissionError as exc:
            raise StoreUnavailableError(self.url, f"NOPERM: {exc}") from None
        except redis.ResponseError as exc:
            if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise StoreUnavailableError(self.url, str(exc)) from None
            raise StoreError(self.url, str(exc) or type(exc).__name__) from None
        except redis.RedisError as exc:
            raise StoreError(self.url, str(exc) or type(exc).__name__) from None

    def _run(self, name: str, args: Sequence[Any], key: str) -> Any:
        with self._guard():
            return self._scripts[name](keys=[key], args=[self.keys.tag, *args], client=self.client)

    # ------------------------------------------------------------------ writes
    def create_study(self, study: Study) -> tuple[str, bool]:
        for _ in range(_ID_CLASH_RETRIES):
            status, *rest = self._run(
                "create_study",
                [digest(study.name), study.id, *_pairs(study.to_fields())],
                self.keys.key("study", "name"),
            )
            if status != -1:
                return _text(rest[0]), status == 1
            fresh_id, created_at = new_id()
            study = study.replace(id=fresh_id, created_at=created_at)
        raise RuntimeError("could not allocate a unique study id")  # pragma: no cover

    def create_run(self, run: Run, keep_id: bool = False) -> Run:
        if run.study_id is None:
            raise InvalidRecordError("a new run needs a study_id")
        sequence = ""
        if keep_id:
            sequence = run_sequence(run.id) or ""
            if not sequence:
                raise InvalidRecordError(f"{run.id!r} is not a run id (r<number>)")
        fields = run.to_fields()
        fields.pop("workers", None)  # attached by the script from the worker indexes
        result = self._run(
            "create_run",
            [
                digest(run.workspace),
                sequence,
                run.study_id,
                run.status.value,
                len(run.queues),
                *run.queues,
                *_pairs(fields),
            ],
            self.keys.key("run", "workspace"),
        )
        status = result[0]
        if status == 1:
            workers = tuple(sorted(_text(w) for w in result[2:]))
            return run.replace(id=_rid(result[1]), workers=workers)
        if status == 0:
            raise DuplicateEntityError("run", "workspace", run.workspace, _rid(result[1]))
        if status == -2:
            raise StudyNotFoundError(run.study_id, "it was deleted while the run was created")
        raise DuplicateEntityError("run", "id", run.id, run.id)

    def add_run_queues(self, run_id: str, queues: Sequence[str]) -> Run:
        result = self._run(
            "add_run_queues", [_seq(run_id), *queues], self.keys.record("run", _seq(run_id))
        )
        if result[0] == -1:
            raise RunNotFoundError(run_id)
        run = self.fetch(Run, run_id)
        if run is None:  # deleted in between
            raise RunNotFoundError(run_id)
        return run

    def create_logical_worker(self, worker: LogicalWorker) -> bool:
        fields = worker.to_fields()
        created = self._run(
            "create_logical_worker",
            [
                worker.id,
                worker.name,
                len(worker.queues),
                *worker.queues,
                *_pairs(fields),
            ],
            self.keys.record("logical_worker", worker.id),
        )
        return bool(created)

    def upsert_physical_worker(
        self, candidate: PhysicalWorker, given: frozenset[str]
    ) -> tuple[PhysicalWorker, str]:
        start_fields = {"pid", "host", "status", "latest_start_time"}
        all_fields = candidate.to_fields()
        always = {
            name: candidate.encode_field(name, getattr(candidate, name))
            for name in sorted(given | {"heartbeat_timestamp"})
            if name in candidate.CODECS
        }
        on_start = {
            name: candidate.encode_field(name, getattr(candidate, name))
            for name in sorted(start_fields - given)
            if getattr(candidate, name) is not None
        }
        on_create = {k: v for k, v in all_fields.items() if k not in always and k not in on_start}
        pid = "" if candidate.pid is None else str(candidate.pid)
        for _ in range(_ID_CLASH_RETRIES):
            status, *rest = self._run(
                "upsert_physical_worker",
                [
                    digest(candidate.name),
                    candidate.id,
                    pid,
                    candidate.logical_worker_id or "",
                    len(always),
                    *_pairs(always),
                    len(on_start),
                    *_pairs(on_start),
                    *_pairs(on_create),
                ],
                self.keys.key("pw", "name"),
            )
            if status == -3:
                raise WorkerNotFoundError(
                    str(candidate.logical_worker_id), "no logical worker has this id"
                )
            if status != -1:
                worker = self.fetch(PhysicalWorker, _text(rest[0]))
                if worker is None:  # deleted in between
                    raise WorkerNotFoundError(candidate.name)
                return worker, {1: "created", 2: "restarted", 0: "updated"}[status]
            fresh_id, created_at = new_id()
            candidate = candidate.replace(id=fresh_id, created_at=created_at)
            on_create["created_at"] = candidate.encode_field("created_at", created_at)
        raise RuntimeError("could not allocate a unique worker id")  # pragma: no cover

    def update_fields(
        self,
        record_type: type[Run | PhysicalWorker],
        record_id: str,
        changes: Mapping[str, Any],
    ) -> None:
        encoded = {name: self._encode_or_clear(record_type, name, v) for name, v in changes.items()}
        segment = ENTITY_SEGMENT[record_type.ENTITY]
        member = _seq(record_id) if record_type is Run else record_id
        result = self._run(
            "update_fields",
            [segment, member, *_pairs(encoded)],
            self.keys.record(record_type.ENTITY, member),
        )
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
            "link_run_worker",
            [_seq(run_id), worker_id, "1" if linked else "0"],
            self.keys.record("run", _seq(run_id)),
        )
        if result == -1:
            raise RunNotFoundError(run_id)
        if result == -2:
            raise WorkerNotFoundError(worker_id)
        return bool(result)

    def apply_task_events(self, events: Sequence[TaskEvent], settle: float = 0.0) -> list[str]:
        if not events:
            return []
        by_member = {_seq(event.run_id): event.run_id for event in events}
        payload = json.dumps(
            [[_seq(event.run_id), *event.to_json()[1:]] for event in events], ensure_ascii=False
        )
        now = Run.encode_field("updated_at", datetime.now(timezone.utc))
        settle_micros = max(0, round(settle * 1_000_000))
        missing = self._run(
            "task_events", [payload, now, settle_micros], self.keys.key("run", "workspace")
        )
        return [by_member.get(_text(member), _rid(member)) for member in missing]

    def settle_runs(self) -> list[str]:
        now = Run.encode_field("updated_at", datetime.now(timezone.utc))
        completed = self._run("settle_runs", [now], self.keys.key("run", "settling"))
        return [_rid(member) for member in completed]

    def change_publishing(self, run_id: str, delta: int) -> RunStatus | None:
        now = Run.encode_field("updated_at", datetime.now(timezone.utc))
        status = self._run(
            "change_publishing", [_seq(run_id), delta, now], self.keys.record("run", _seq(run_id))
        )
        return RunStatus(_text(status)) if status else None

    def set_run_status(
        self, run_id: str, status: RunStatus, allowed_from: Sequence[RunStatus]
    ) -> tuple[bool, RunStatus]:
        now = Run.encode_field("updated_at", datetime.now(timezone.utc))
        result = self._run(
            "set_run_status",
            [_seq(run_id), status.value, now, *(s.value for s in allowed_from)],
            self.keys.record("run", _seq(run_id)),
        )
        if result[0] == -1:
            raise RunNotFoundError(run_id)
        return result[0] == 1, RunStatus(_text(result[1]))

    def attach_worker_to_runs(self, worker_id: str) -> list[str]:
        attached = self._run(
            "attach_worker_to_runs", [worker_id], self.keys.record("logical_worker", worker_id)
        )
        return [_rid(member) for member in attached]

    def heartbeat(self, worker_id: str, at: datetime) -> bool:
        stamp = PhysicalWorker.encode_field("heartbeat_timestamp", at)
        return bool(
            self._run(
                "heartbeat", [worker_id, stamp], self.keys.record("physical_worker", worker_id)
            )
        )

    def find_dangling(self) -> list[DanglingReference]:
        status_keys = self._all_ids_group(Run)
        with self._guard():
            indexed_runs = {_rid(m) for m in self.client.sunion(status_keys)}
        runs = self.fetch_many(Run, sorted(indexed_runs))
        run_ids = {run.id for run in runs}
        studies = self.fetch_many(Study, sorted(self.find_ids(Study, {})))
        study_ids = {study.id for study in studies}
        logical = self.fetch_many(LogicalWorker, sorted(self.find_ids(LogicalWorker, {})))
        logical_ids = {worker.id for worker in logical}
        physical = self.fetch_many(PhysicalWorker, sorted(self.find_ids(PhysicalWorker, {})))
        physical_ids = {worker.id for worker in physical}
        found = [
            DanglingReference("index", "run status", "runs", i) for i in indexed_runs - run_ids
        ]
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
                DanglingReference("study", study.id, "runs", r)
                for r in study.runs
                if r not in run_ids
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

    def remove_dangling(self, references: Sequence[DanglingReference]) -> int:
        k = self.keys.key
        ops: list[list[str]] = []
        for ref in references:
            if ref.owner_type == "index":
                ops += [["srem", key, _seq(ref.missing)] for key in self._all_ids_group(Run)]
            elif ref.owner_type == "run" and ref.field == "study_id":
                ops.append(["hset", k("run", _seq(ref.owner_id)), "study_id", "null"])
            elif ref.owner_type == "run":
                ops.append(["list_remove", k("run", _seq(ref.owner_id)), "workers", ref.missing])
            elif ref.owner_type == "study":
                ops.append(["srem", k("study", ref.owner_id, "runs"), _seq(ref.missing)])
            elif ref.owner_type == "logical_worker":
                suffix = _RELATION_SUFFIX[ref.field]
                missing = _seq(ref.missing) if ref.field == "runs" else ref.missing
                ops.append(["srem", k("lw", ref.owner_id, suffix), missing])
            elif ref.owner_type == "physical_worker":
                ops.append(["hdel", k("pw", ref.owner_id), "logical_worker_id"])
        if not ops:
            return 0
        payload = json.dumps(ops, ensure_ascii=False)
        self._run("repair", [payload], self.keys.key("run", "workspace"))
        return len(references)

    def _delete_in_batches(self, script: str, ids: Sequence[str], segment: str) -> int:
        deleted = 0
        for start in range(0, len(ids), DELETE_BATCH):
            batch = list(ids[start : start + DELETE_BATCH])
            deleted += int(self._run(script, batch, self.keys.key(segment, "ids")))
        return deleted

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        return self._delete_in_batches("delete_runs", [_seq(i) for i in run_ids], "run")

    def delete_study(self, study_id: str, remove_runs: bool) -> bool:
        while True:
            status, *_ = self._run(
                "delete_study",
                [study_id, "1" if remove_runs else "0", DELETE_BATCH],
                self.keys.record("study", study_id),
            )
            if status != 2:
                return bool(status == 1)

    def delete_logical_workers(self, worker_ids: Sequence[str]) -> int:
        return self._delete_in_batches("delete_logical_workers", worker_ids, "lw")

    def delete_physical_workers(self, worker_ids: Sequence[str]) -> int:
        return self._delete_in_batches("delete_physical_workers", worker_ids, "pw")

    # ------------------------------------------------------------------ reads
    def _relation_suffixes(self, record_type: type[Record]) -> list[str]:
        return [_RELATION_SUFFIX[name] for name in record_type.RELATIONS]

    def fetch(self, record_type: type[R], id_or_key: str) -> R | None:
        entity = record_type.ENTITY
        is_run = record_type is Run
        unique = _UNIQUE_INDEX.get(entity, "")
        # Only id-shaped strings are tried as ids, so a workspace such as "status:RUNNING" can
        # never be mistaken for one of the index keys that live beside the records.
        candidate = ""
        if looks_like_id(id_or_key):
            candidate = _seq(id_or_key) if is_run else id_or_key
        reply = self._run(
            "fetch",
            [
                ENTITY_SEGMENT[entity],
                candidate,
                unique,
                digest(id_or_key) if unique else "",
                *self._relation_suffixes(record_type),
            ],
            self.keys.record(entity, candidate or id_or_key),
        )
        if not reply:
            return None
        record_id = _rid(reply[0]) if is_run else _text(reply[0])
        n_flat = int(reply[1])
        flat = reply[2 : 2 + n_flat]
        fields = _join_chunks({flat[i]: flat[i + 1] for i in range(0, n_flat, 2)})
        relations: dict[str, list[str]] = {}
        pos = 2 + n_flat
        for name in record_type.RELATIONS:
            count = int(reply[pos])
            relations[name] = self._relation_ids(name, reply[pos + 1 : pos + 1 + count])
            pos += 1 + count
        record = record_type.from_fields(record_id, fields, relations)
        if isinstance(record, PhysicalWorker):
            return _with_liveness(record, bool(reply[pos]))  # type: ignore[return-value]
        return record

    @staticmethod
    def _relation_ids(name: str, members: Sequence[bytes | str]) -> list[str]:
        # ``runs`` sets hold run sequence numbers; other relations hold ids as they are.
        if name == "runs":
            return [_rid(m) for m in members]
        return [_text(m) for m in members]

    def fetch_many(self, record_type: type[R], ids: Sequence[str]) -> list[R]:
        entity = record_type.ENTITY
        segment = ENTITY_SEGMENT[entity]
        relations = record_type.RELATIONS
        liveness = int(record_type is PhysicalWorker)
        is_run = record_type is Run
        step = 1 + len(relations) + liveness
        records: list[R] = []
        for start in range(0, len(ids), PAGE_SIZE):
            page = ids[start : start + PAGE_SIZE]
            with self._guard():
                pipe = self.client.pipeline(transaction=False)
                for record_id in page:
                    member = _seq(record_id) if is_run else record_id
                    pipe.hgetall(self.keys.record(entity, member))
                    for name in relations:
                        pipe.smembers(self.keys.key(segment, member, _RELATION_SUFFIX[name]))
                    if liveness:
                        pipe.exists(self.keys.key("pw", member, "alive"))
                replies = pipe.execute()
            for index, record_id in enumerate(page):
                base = index * step
                raw = replies[base]
                if not raw:
                    continue
                rel = {
                    name: self._relation_ids(name, replies[base + 1 + n])
                    for n, name in enumerate(relations)
                }
                record = record_type.from_fields(record_id, _join_chunks(raw), rel)
                if isinstance(record, PhysicalWorker):
                    record = _with_liveness(record, bool(replies[base + step - 1]))  # type: ignore[assignment]
                records.append(record)
        return records

    def _all_ids_group(self, record_type: type[Record]) -> list[str]:
        if record_type is Run:
            return [self.keys.key("run", "status", s.value) for s in RunStatus]
        return [self.keys.key(ENTITY_SEGMENT[record_type.ENTITY], "ids")]

    def _filter_group(self, record_type: type[Record], name: str, values: Sequence[str]) -> Any:
        k = self.keys.key
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
            if name in ("status", "host"):
                return [k("pw", name, v) for v in values]
        # Unique fields (study name, physical worker name): resolve through the index.
        index = k(ENTITY_SEGMENT[entity], "name")
        with self._guard():
            found = self.client.hmget(index, [digest(v) for v in values])
        return {"ids": sorted({_text(i) for i in found if i is not None})}

    def find_ids(self, record_type: type[Record], filters: Filters) -> list[str]:
        groups = [self._filter_group(record_type, n, v) for n, v in filters.items()]
        if not groups:
            groups = [self._all_ids_group(record_type)]
        if any(isinstance(g, dict) and not g["ids"] for g in groups):
            return []
        if len(groups) == 1 and isinstance(groups[0], list):
            with self._guard():
                members = self.client.sunion(groups[0]) if groups[0] else set()
            return [self._found_id(record_type, m) for m in members]
        if all(isinstance(g, list) and len(g) == 1 for g in groups):
            # One index per filter key: Redis's own SINTER walks the smallest set.
            with self._guard():
                found = self.client.sinter([g[0] for g in groups])
            return [self._found_id(record_type, m) for m in found]
        payload = json.dumps(groups, ensure_ascii=False)
        found = self._run("find_ids", [payload], self._all_ids_group(record_type)[0])
        return [self._found_id(record_type, m) for m in found]

    @staticmethod
    def _found_id(record_type: type[Record], member: bytes | str) -> str:
        return _rid(member) if record_type is Run else _text(member)

    def count(self, record_type: type[Record]) -> int:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for key in self._all_ids_group(record_type):
                pipe.scard(key)
            return sum(int(n) for n in pipe.execute())

    def recent_run_ids(self, limit: int) -> list[str]:
        with self._guard():
            members = [_text(m) for m in self.client.lrange(self.keys.key("run", "recent"), 0, -1)]
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.exists(self.keys.record("run", member))
            alive = pipe.execute()
        unique = {int(m) for m, ok in zip(members, alive, strict=True) if ok}
        return [run_id(n) for n in sorted(unique, reverse=True)[:limit]]

    def server_info(self) -> dict[str, Any]:
        with self._guard():
            info = self.client.info("server")
            memory = self.client.info("memory")
        return {
            "server": "redis",
            "server_version": info.get("redis_version"),
            "used_memory_human": memory.get("used_memory_human"),
            "prefix": self.keys.prefix,
        }

    def ping(self) -> None:
        with self._guard():
            self.client.ping()
