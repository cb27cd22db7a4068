"""The Starlette application: pages, ``/api/``, ``/metrics``, ``/static/`` and the form writes.

Handlers are plain functions, which Starlette runs in its thread pool: the store calls block,
and every store is safe to use from several threads (Redis pools its connections, SQLite keeps
one per thread).
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from merlin_tracking.errors import TrackingError
from merlin_tracking.web import api, metrics, pages, queries
from merlin_tracking.web.api import Settings
from merlin_tracking.web.layout import page, text
from merlin_tracking.web.report import render_report
from merlin_tracking.web.security import (
    AUTH_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    WriteRefused,
    new_session,
)

STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    # Nothing from elsewhere, no inline script: a string that slipped through unescaped
    # would still not run.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _session(request: Request) -> tuple[str, bool]:
    """The session id of the browser, and whether it is new (to be set as a cookie)."""
    current = request.cookies.get(SESSION_COOKIE)
    return (current, False) if current else (new_session(), True)


def _html(body: str, status: int = 200, session: tuple[str, bool] | None = None) -> Response:
    response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
    if session is not None and session[1]:
        response.set_cookie(SESSION_COOKIE, session[0], httponly=True, samesite="strict")
    return response


def _error_page(exc: Exception, status: int) -> Response:
    live = f'<p class="error">{text(exc)}</p><p><a href="/runs">All runs</a></p>'
    return _html(page(f"Error {status}", "", live, poll=False), status)


async def _form(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form (the only kind the pages send; the first of each)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {key: values[0] for key, values in parse_qs(body).items()}


def _same_origin(request: Request) -> bool:
    """The form came from a page of this server (browsers send ``Origin`` on a POST)."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return True
        origin = referer
    parsed = urlparse(origin)
    return f"{parsed.scheme}://{parsed.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


def create_app(settings: Settings) -> Starlette:
    policy = settings.policy

    def db() -> Any:
        return settings.state.settled_db()

    def render(request: Request, title: str, active: str, live: Any, before: str = "") -> Response:
        """``live()`` builds the refreshable part; ``?partial=1`` answers it alone."""
        session = _session(request)
        try:
            body = live(session[0])
        except TrackingError as exc:
            return _error_page(exc, api.status_of(exc))
        if request.query_params.get("partial"):
            return _html(body, session=session)
        return _html(page(title, active, body, before), session=session)

    def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=307)

    def runs_page(request: Request) -> Response:
        params = dict(request.query_params)
        return render(
            request,
            "Runs",
            "/runs",
            lambda _s: pages.runs_live(queries.runs_list(db(), request.query_params), params),
            pages.runs_filters(params),
        )

    def run_page(request: Request) -> Response:
        run_id = request.path_params["run"]

        def live(session: str) -> str:
            database = db()
            doc = queries.run_show(database, run_id)
            queued = doc["run"]["tasks_queued"]
            tasks = (
                database.tasks.get_all({"run_id": doc["run"]["id"]})
                if queued <= pages.CHART_TASK_LIMIT
                else None
            )
            actions = pages.actions(doc["run"], policy.csrf_value(session), policy.writable)
            return pages.run_live(doc, tasks, pages.now_utc(), actions)

        return render(request, f"Run {run_id}", "/runs", live)

    def workers_page(request: Request) -> Response:
        return render(
            request,
            "Workers",
            "/workers",
            lambda _s: pages.workers_live(queries.workers_list(db()), pages.now_utc()),
        )

    def studies_page(request: Request) -> Response:
        params = dict(request.query_params)
        return render(
            request,
            "Studies",
            "/studies",
            lambda _s: pages.studies_live(queries.studies_list(db(), request.query_params), params),
        )

    def study_page(request: Request) -> Response:
        study = request.path_params["study"]
        return render(
            request,
            f"Study {study}",
            "/studies",
            lambda _s: pages.study_live(queries.study_show(db(), study)),
        )

    def report_page(request: Request) -> Response:
        try:
            body = render_report(db(), request.path_params["run"])
        except TrackingError as exc:
            return _error_page(exc, api.status_of(exc))
        return _html(body)

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", status_code=404)
        data = resources.files("merlin_tracking.web").joinpath("static").joinpath(name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"cache-control": "max-age=300"})

    def metrics_page(request: Request) -> Response:
        try:
            body = metrics.render(db())
        except TrackingError as exc:
            return PlainTextResponse(str(exc), status_code=api.status_of(exc))
        return Response(body, media_type=metrics.CONTENT_TYPE)

    def login(request: Request) -> Response:
        session = _session(request)
        csrf = policy.csrf_value(session[0])
        note = (
            "Give the server's token to enable the cancel, requeue and delete buttons."
            if policy.writable
            else "This server is read-only (started without --allow-writes and a token)."
        )
        form = (
            f'<form method="post" action="/login"><input type="hidden" name="{CSRF_FIELD}" '
            f'value="{text(csrf)}"><label>Token <input type="password" name="token" '
            'autocomplete="current-password"></label> <button type="submit">Log in</button></form>'
            if policy.writable
            else ""
        )
        return _html(page("Log in", "", f"<p>{note}</p>{form}", poll=False), session=session)

    async def login_post(request: Request) -> Response:
        form = await _form(request)
        session = request.cookies.get(SESSION_COOKIE)
        try:
            policy.check_csrf(session, str(form.get(CSRF_FIELD) or ""), _same_origin(request))
            policy.check_token(str(form.get("token") or ""))
        except WriteRefused as exc:
            return _error_page(exc, exc.status)
        assert session is not None
        response = RedirectResponse("/runs", status_code=303)
        response.set_cookie(
            AUTH_COOKIE, policy.auth_value(session), httponly=True, samesite="strict"
        )
        return response

    async def form_write(request: Request) -> Response:
        run_id, verb = request.path_params["run"], request.path_params["verb"]
        form = await _form(request)
        operation = api.WRITES.get(verb)
        if operation is None:
            return _error_page(LookupError(f"no such action: {verb}"), 404)
        try:
            policy.check_form(
                request.cookies.get(SESSION_COOKIE),
                request.cookies.get(AUTH_COOKIE),
                str(form.get(CSRF_FIELD) or ""),
                _same_origin(request),
            )
            await run_in_threadpool(operation, settings, run_id)
        except WriteRefused as exc:
            return _error_page(exc, exc.status)
        except TrackingError as exc:
            return _error_page(exc, api.status_of(exc))
        target = "/runs" if verb == "delete" else f"/runs/{quote(run_id, safe='')}"
        return RedirectResponse(target, status_code=303)

    routes = [
        Route("/", home),
        Route("/runs", runs_page),
        Route("/runs/{run}", run_page),
        Route("/runs/{run}/report", report_page),
        Route("/runs/{run}/{verb}", form_write, methods=["POST"]),
        Route("/workers", workers_page),
        Route("/studies", studies_page),
        Route("/studies/{study}", study_page),
        Route("/login", login, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/metrics", metrics_page),
        Route("/static/{name}", static),
        *api.routes(settings),
    ]
    return Starlette(routes=routes)
