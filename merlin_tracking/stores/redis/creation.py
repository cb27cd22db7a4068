"""Creating records: each kind's script arguments, its outcomes, and the retries on an id clash.

Creation is where the Python side does most: it lays out the ARGV the scripts document (queues,
field pairs, the upsert's field groups) and turns the outcome codes into results or errors. A
generated id clashes only when two processes draw the same one in the same microsecond, so a
clash is retried with a fresh id a few times.
"""

from __future__ import annotations

from merlin_tracking.errors import (
    DuplicateEntityError,
    InvalidRecordError,
    StudyNotFoundError,
    WorkerNotFoundError,
)
from merlin_tracking.ids import new_id, run_sequence
from merlin_tracking.records import LogicalWorker, PhysicalWorker, Run, Study
from merlin_tracking.stores.redis.keys import digest, run_id_of, text
from merlin_tracking.stores.redis.scripts import RunScript, pairs

_ID_CLASH_RETRIES = 5
# Fields a restart refreshes from the new process (unless the caller set them explicitly).
_START_FIELDS = frozenset({"pid", "host", "status", "latest_start_time"})
_OUTCOMES = {1: "created", 2: "restarted", 0: "updated"}


def create_study(run_script: RunScript, study: Study) -> tuple[str, bool]:
    for _ in range(_ID_CLASH_RETRIES):
        status, *rest = run_script(
            "create_study", [digest(study.name), study.id, *pairs(study.to_fields())]
        )
        if status != -1:
            return text(rest[0]), status == 1
        fresh_id, created_at = new_id()
        study = study.replace(id=fresh_id, created_at=created_at)
    raise RuntimeError("could not allocate a unique study id")  # pragma: no cover


def create_run(run_script: RunScript, run: Run, keep_id: bool, study: Study | None = None) -> Run:
    if study is None and run.study_id is None:
        raise InvalidRecordError("a new run needs a study_id")
    sequence = ""
    if keep_id:
        sequence = run_sequence(run.id) or ""
        if not sequence:
            raise InvalidRecordError(f"{run.id!r} is not a run id (r<number>)")
    fields = run.to_fields()
    fields.pop("workers", None)  # attached by the script from the worker indexes
    if study is not None:
        fields.pop("study_id", None)  # the script writes the id of the study it found or made
    for _ in range(_ID_CLASH_RETRIES):
        study_items = (
            [] if study is None else [digest(study.name), study.id, *pairs(study.to_fields())]
        )
        result = run_script(
            "create_run",
            [
                digest(run.workspace),
                sequence,
                "" if study is not None else run.study_id,
                run.status.value,
                len(run.queues),
                *run.queues,
                len(study_items),
                *study_items,
                *pairs(fields),
            ],
        )
        status = result[0]
        if status == 1:
            workers = tuple(sorted(text(w) for w in result[3:]))
            return run.stored_as(id=run_id_of(result[1]), study_id=text(result[2]), workers=workers)
        if status == 0:
            raise DuplicateEntityError("run", "workspace", run.workspace, run_id_of(result[1]))
        if status == -2:
            raise StudyNotFoundError(str(run.study_id), "it was deleted while the run was created")
        if status == -1:
            raise DuplicateEntityError("run", "id", run.id, run.id)
        assert study is not None  # -3: the new study's generated id clashed
        fresh_id, created_at = new_id()
        study = study.replace(id=fresh_id, created_at=created_at)
    raise RuntimeError("could not allocate a unique study id")  # pragma: no cover


def create_logical_worker(run_script: RunScript, worker: LogicalWorker) -> bool:
    fields = worker.to_fields()
    created = run_script(
        "create_logical_worker",
        [worker.id, worker.name, len(worker.queues), *worker.queues, *pairs(fields)],
    )
    return bool(created)


def upsert_physical_worker(
    run_script: RunScript, candidate: PhysicalWorker, given: frozenset[str]
) -> tuple[str, str]:
    """The stored worker's id and "created", "restarted" or "updated"."""
    all_fields = candidate.to_fields()
    always = {
        name: candidate.encode_field(name, getattr(candidate, name))
        for name in sorted(given | {"heartbeat_timestamp"})
        if name in candidate.CODECS
    }
    on_start = {
        name: candidate.encode_field(name, getattr(candidate, name))
        for name in sorted(_START_FIELDS - given)
        if getattr(candidate, name) is not None
    }
    on_create = {k: v for k, v in all_fields.items() if k not in always and k not in on_start}
    pid = "" if candidate.pid is None else str(candidate.pid)
    for _ in range(_ID_CLASH_RETRIES):
        status, *rest = run_script(
            "upsert_physical_worker",
            [
                digest(candidate.name),
                candidate.id,
                pid,
                candidate.logical_worker_id or "",
                len(always),
                *pairs(always),
                len(on_start),
                *pairs(on_start),
                *pairs(on_create),
            ],
        )
        if status == -3:
            raise WorkerNotFoundError(
                str(candidate.logical_worker_id), "no logical worker has this id"
            )
        if status != -1:
            return text(rest[0]), _OUTCOMES[status]
        fresh_id, created_at = new_id()
        candidate = candidate.replace(id=fresh_id, created_at=created_at)
        on_create["created_at"] = candidate.encode_field("created_at", created_at)
    raise RuntimeError("could not allocate a unique worker id")  # pragma: no cover
