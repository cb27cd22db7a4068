"""The JSON API and ``/metrics`` against a real server on a real ledger (Redis and SQLite)."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from merlin_tracking import RunStatus, TrackingDatabase
from tests.support.cli import Cli
from tests.support.web import WebServer
from tests.web.conftest import HOSTILE, Book

#: A reference to something outside the server: every asset must be the package's own.
EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//"""
)


def _without_clock(document: dict) -> dict:
    """A document without the values that move with time (active runs' elapsed seconds)."""
    runs = document.get("runs") or []
    for run in runs:
        run.pop("elapsed_seconds", None)
    if "run" in document:
        document["run"].pop("elapsed_seconds", None)
    return document


def test_runs_and_run_have_the_cli_json_shapes(
    server: WebServer, book: Book, url: str, prefix: str
) -> None:
    cli = Cli(url, prefix)
    listed = server.get("/api/runs").json()
    expected = cli.json("runs", "list")
    assert {"count", "runs", "total", "offset", "limit"} <= listed.keys()
    assert (listed["total"], listed["offset"], listed["limit"]) == (3, 0, 50)
    assert _without_clock(listed)["runs"] == _without_clock(expected)["runs"]
    shown = server.get(f"/api/runs/{book.stalled}").json()
    assert _without_clock(shown) == _without_clock(cli.json("runs", "show", book.stalled))
    assert shown["stalled_reason"] and shown["lost_tasks"][0]["id"] == "held"
    tasks = server.get(f"/api/runs/{book.completed}/tasks?limit=3&offset=1").json()
    assert (tasks["run_id"], tasks["count"], tasks["total"]) == (book.completed, 3, 4)
    assert [t["id"] for t in tasks["tasks"]] == ["ok-1", "ok-2", "ok-3"]
    assert tasks["tasks"][0]["duration_seconds"] > 0.4
    failed = server.get(f"/api/runs/{book.failed}/tasks?state=failed").json()
    assert [t["error"] for t in failed["tasks"]] == [f"ValueError: {HOSTILE}"]


def test_filters_paging_and_other_documents(server: WebServer, book: Book) -> None:
    stalled = server.get("/api/runs?status=stalled").json()
    assert [r["id"] for r in stalled["runs"]] == [book.stalled]
    assert stalled["stalled"] == 1
    both = server.get("/api/runs?status=failed,completed").json()
    assert {r["id"] for r in both["runs"]} == {book.failed, book.completed}
    assert server.get("/api/runs?study=sweep&limit=1").json()["total"] == 2
    page = server.get("/api/runs?limit=1&offset=2").json()
    assert (page["count"], page["total"]) == (1, 3)
    assert server.get("/api/runs?queue=orphan").json()["runs"][0]["id"] == book.stalled
    assert server.get("/api/runs?worker=sim&since=1h").json()["total"] == 3
    workers = server.get("/api/workers").json()
    assert sorted(pw["name"] for pw in workers["physical_workers"]) == ["sim@n1", "sim@n2"]
    assert workers["logical_workers"][0]["live_physical_workers"] == 1
    assert workers["uncovered_queues"] == ["orphan"]
    studies = server.get("/api/studies").json()
    assert sorted(s["name"] for s in studies["studies"]) == sorted([HOSTILE, "sweep"])
    assert studies["total"] == 2
    sweep = server.get("/api/studies/sweep").json()
    assert {r["id"] for r in sweep["runs"]} == {book.failed, book.stalled}
    info = server.get("/api/info").json()
    assert info["counts"]["run"] == 3 and info["lost_tasks"] == {"tasks": 1, "runs": 1}


def test_errors_are_json_with_400_and_404(server: WebServer, book: Book) -> None:
    cases = {
        "/api/runs/nope": (404, "RunNotFoundError"),
        "/api/runs/nope/tasks": (404, "RunNotFoundError"),
        "/api/studies/nope": (404, "StudyNotFoundError"),
        "/api/runs?study=nope": (404, "StudyNotFoundError"),
        "/api/nothing/here": (404, "NotFound"),
        "/api/runs?status=sleepy": (400, "InvalidFilterError"),
        "/api/runs?limit=-1": (400, "InvalidFilterError"),
        "/api/runs?offset=x": (400, "InvalidFilterError"),
        "/api/runs?since=yesterday-ish": (400, "InvalidFilterError"),
        "/api/runs?since=1h&until=2h": (400, "InvalidFilterError"),
        f"/api/runs/{book.failed}/tasks?state=napping": (400, "InvalidFilterError"),
    }
    for path, (status, kind) in cases.items():
        reply = server.get(path)
        assert reply.status == status, (path, reply.text)
        assert reply.headers["content-type"] == "application/json"
        error = reply.json()["error"]
        assert (error["status"], error["type"]) == (status, kind), path
        assert error["message"]


def test_metrics_parse_and_count_the_ledger(server: WebServer, book: Book) -> None:
    reply = server.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    assert all(name.startswith("merlin_tracking_") for name in families)

    def value(name: str, **labels: str) -> float:
        matches = [s.value for s in families[name].samples if s.labels == labels]
        assert len(matches) == 1, (name, labels, families[name].samples)
        return matches[0]

    assert value("merlin_tracking_runs", status="COMPLETED") == 1
    assert value("merlin_tracking_runs", status="FAILED") == 1
    assert value("merlin_tracking_runs", status="STALLED") == 1
    assert value("merlin_tracking_physical_workers", status="RUNNING") == 1
    assert value("merlin_tracking_physical_workers", status="STOPPED") == 1
    assert value("merlin_tracking_lost_tasks") == 1
    assert value("merlin_tracking_runs_with_lost_tasks") == 1
    assert value("merlin_tracking_active_run_tasks", counter="queued") == 2
    assert value("merlin_tracking_uncovered_queues") == 1
    assert 0 <= value("merlin_tracking_heartbeat_age_seconds", logical_worker="sim") < 60
    assert value("merlin_tracking_live_workers", logical_worker="sim") == 1
    # Bounded labels: no run id, task id or process name appears in any label.
    labels = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert not labels & {book.completed, book.failed, book.stalled, "held", "sim@n1", "sim@n2"}


def test_pages_render_and_escape_ledger_strings(server: WebServer, book: Book) -> None:
    for path in (
        "/runs",
        f"/runs/{book.completed}",
        f"/runs/{book.failed}",
        "/workers",
        "/studies",
    ):
        reply = server.get(path)
        assert reply.status == 200, (path, reply.text)
        assert HOSTILE not in reply.text, path
        assert "<script>alert" not in reply.text, path
        assert not EXTERNAL.search(reply.text), path
        assert len(reply.body) < 200_000
    runs = server.get("/runs").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in runs
    assert server.get(f"/runs/{book.failed}").text.count("ValueError: &lt;script&gt;") == 1
    partial = server.get("/runs?partial=1").text
    assert not partial.startswith("<!doctype") and book.stalled in partial
    assert "content-security-policy" in server.get("/runs").headers


def test_a_run_page_updates_from_the_ledger(server: WebServer, db: TrackingDatabase) -> None:
    run = db.runs.create("live", "/ws/live", ["sim"])
    before = server.get(f"/runs/{run.id}?partial=1").text
    assert RunStatus.INITIALIZED.value in before
    db.runs.cancel(run.id)
    assert RunStatus.CANCELLED.value in server.get(f"/runs/{run.id}?partial=1").text


def test_static_assets_come_from_the_package(server: WebServer) -> None:
    css, js = server.get("/static/app.css"), server.get("/static/app.js")
    assert css.status == js.status == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "fetch(" in js.text
    assert server.get("/static/../web/app.py").status == 404
    assert server.get("/static/nope.js").status == 404


def test_the_workers_page_shows_each_workers_allocation(
    server: WebServer, book: Book, db: TrackingDatabase
) -> None:
    db.physical_workers.update("sim@n1", scheduler="slurm", job_id="4242<b>")
    page = server.get("/workers?partial=1").text
    assert "slurm 4242&lt;b&gt;" in page
    api = server.get("/api/workers").json()
    assert [pw["job_id"] for pw in api["physical_workers"] if pw["name"] == "sim@n1"] == ["4242<b>"]
