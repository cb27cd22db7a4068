"""The JSON API under ``/api/``: the CLI's ``--json`` documents, paged, and the writes.

Errors are JSON too: ``{"error": {"status", "type", "message"}}`` with 400 for a bad
parameter, 404 for an unknown record or address, 401/403 for a refused write, 409 for a write
the ledger refuses, 503 for a store that cannot be reached. Store messages name the URL with
its password masked (the errors of ``merlin_tracking.errors`` already do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from merlin_tracking.cancel import broker_app, revoke, task_ids_to_revoke, unfinished_work
from merlin_tracking.cli.broker import BROKER_ENV, broker_of
from merlin_tracking.cli.context import CliState
from merlin_tracking.cli.info import info_document
from merlin_tracking.errors import (
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidFilterError,
    InvalidRecordError,
    InvalidTransitionError,
    StoreError,
    TrackingError,
)
from merlin_tracking.records import RunStatus
from merlin_tracking.records.status import TERMINAL_RUN_STATUSES
from merlin_tracking.requeue import requeue_lost
from merlin_tracking.web import queries
from merlin_tracking.web.security import WritePolicy, WriteRefused


@dataclass
class Settings:
    """What the server was started with: the store (through the CLI's state), who may write,
    and the broker lost tasks are requeued through."""

    state: CliState
    policy: WritePolicy = field(default_factory=WritePolicy)
    broker: str | None = None

    def broker_url(self) -> tuple[str | None, dict[str, Any]]:
        """The broker as the CLI's commands find it (``cli/broker.py``)."""
        return broker_of(self.state, self.broker)


def error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "type": kind, "message": message}}


def status_of(exc: Exception) -> int:
    """The HTTP status of a package error."""
    if isinstance(exc, EntityNotFoundError):
        return 404
    if isinstance(exc, (InvalidFilterError, InvalidRecordError)):
        return 400
    if isinstance(exc, (InvalidTransitionError, DuplicateEntityError)):
        return 409
    if isinstance(exc, StoreError):
        return 503
    return 500


def json_error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, kind, message), status_code=status)


def answer(build: Callable[[], Any]) -> Response:
    """The document ``build`` makes, or the JSON error of what it raised."""
    try:
        return JSONResponse(build())
    except WriteRefused as exc:
        return json_error(exc.status, "WriteRefused", exc.message)
    except TrackingError as exc:
        return json_error(status_of(exc), type(exc).__name__, str(exc))


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.headers.get("x-merlin-tracking-token")


# ---------------------------------------------------------------------------- writes
def cancel(settings: Settings, run: str) -> dict[str, Any]:
    """``runs cancel --json`` of one run (a finished run is a 409): marked CANCELLED, and its
    waiting tasks revoked (``merlin_tracking.cancel``) when the server knows a broker;
    without one, ``revoked`` is null and they may still run."""
    db = settings.state.db
    record = db.runs.get(run)
    if record.status in TERMINAL_RUN_STATUSES and record.status is not RunStatus.CANCELLED:
        raise InvalidTransitionError(
            f"cannot cancel finished run {record.id} ({record.status.value})"
        )
    already = record.status is RunStatus.CANCELLED
    if not already:
        db.runs.cancel(record.id)
    work = unfinished_work(db, record.id)
    revoked: int | None = None
    url, options = settings.broker_url()
    if url is not None and work.waiting:
        app = broker_app(url, options)
        try:
            revoke(app, task_ids_to_revoke([work], terminate=False))
        finally:
            app.close()
        revoked = len(work.waiting)
    elif url is not None:
        revoked = 0
    return {
        "dry_run": False,
        "cancelled": [] if already else [record.id],
        "already_cancelled": [record.id] if already else [],
        "revoked": revoked,
        "running": len(work.running),
    }


def delete(settings: Settings, run: str) -> dict[str, Any]:
    """``runs delete --json`` of one run."""
    db = settings.state.db
    record = db.runs.get(run)
    db.runs.delete(record.id)
    return {"dry_run": False, "count": 1, "deleted": [record.id]}


def requeue(settings: Settings, run: str) -> dict[str, Any]:
    """``runs requeue --lost --json``; needs a broker when there is something to publish."""
    db = settings.state.db
    preview = requeue_lost(db, run, None, dry_run=True)
    report = preview
    if preview.requeued:
        url, options = settings.broker_url()
        if url is None:
            raise InvalidFilterError(
                f"no broker to requeue through: start the server with --broker URL or set "
                f"{BROKER_ENV}"
            )
        report = requeue_lost(db, run, url, False, options)
    return {
        "run_id": report.run_id,
        "dry_run": False,
        "requeued": list(report.requeued),
        "without_message": list(report.without_message),
        "failed": [{"id": task_id, "error": why} for task_id, why in report.failed],
    }


WRITES: dict[str, Callable[[Settings, str], dict[str, Any]]] = {
    "cancel": cancel,
    "requeue": requeue,
    "delete": delete,
}


def routes(settings: Settings) -> list[Route]:
    def db() -> Any:
        return settings.state.settled_db()

    def info(request: Request) -> Response:
        def build() -> Any:
            recent = queries.integer(request.query_params, "recent", 5, 0, 1000)
            settings.state.settled_db()
            return info_document(settings.state, recent)

        return answer(build)

    def runs(request: Request) -> Response:
        return answer(lambda: queries.runs_list(db(), request.query_params))

    def run(request: Request) -> Response:
        return answer(lambda: queries.run_show(db(), request.path_params["run"]))

    def tasks(request: Request) -> Response:
        return answer(
            lambda: queries.run_tasks(db(), request.path_params["run"], request.query_params)
        )

    def workers(request: Request) -> Response:
        return answer(lambda: queries.workers_list(db()))

    def studies(request: Request) -> Response:
        return answer(lambda: queries.studies_list(db(), request.query_params))

    def study(request: Request) -> Response:
        return answer(lambda: queries.study_show(db(), request.path_params["study"]))

    def write(request: Request) -> Response:
        verb = request.path_params.get("verb", "delete")
        operation = WRITES.get(verb)
        if operation is None:
            return json_error(404, "NotFound", f"no such action: {verb}")

        def build() -> Any:
            settings.policy.check_token(bearer(request))
            assert operation is not None
            return operation(settings, request.path_params["run"])

        return answer(build)

    def unknown(request: Request) -> Response:
        return json_error(404, "NotFound", f"no such API address: {request.url.path}")

    return [
        Route("/api/info", info),
        Route("/api/runs", runs),
        Route("/api/runs/{run}", run, methods=["GET"]),
        Route("/api/runs/{run}", write, methods=["DELETE"]),
        Route("/api/runs/{run}/tasks", tasks),
        Route("/api/runs/{run}/{verb}", write, methods=["POST"]),
        Route("/api/workers", workers),
        Route("/api/studies", studies),
        Route("/api/studies/{study}", study),
        Route("/api/{rest:path}", unknown, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
    ]
