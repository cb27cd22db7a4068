"""``info``: backend, version, counts, runs per status, worker liveness, newest runs."""

from __future__ import annotations

from typing import Any

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import allocation_documents, run_documents
from merlin_tracking.cli.options import examples, json_option
from merlin_tracking.cli.output import (
    Wrap,
    echo_json,
    echo_lines,
    format_bytes,
    plural,
    render_fields,
)
from merlin_tracking.cli.runs import runs_table
from merlin_tracking.cli.workers import allocation_text
from merlin_tracking.records import WorkerStatus
from merlin_tracking.records.run import ACTIVE_STATUSES


def info_document(state: CliState, recent: int) -> dict[str, Any]:
    db = state.settled_db()
    facts = db.info(recent=recent)
    runs_by_status = db.runs.count_by_status()
    workers_by_status = {status.value: 0 for status in WorkerStatus}
    physical = db.physical_workers.get_all()
    for worker in physical:
        workers_by_status[worker.status.value] += 1
    recent_runs = db.runs.get_many(run["id"] for run in facts["recent_runs"])
    active = db.runs.get_all({"status": [status.value for status in ACTIVE_STATUSES]})
    lost = [run.tasks_lost for run in active if run.tasks_lost]
    return {
        "version": facts["version"],
        "backend": facts["backend"],
        "url": facts["url"],
        "prefix": state.resolve()[1],
        "server": facts["server"],
        "counts": facts["counts"],
        "runs_by_status": runs_by_status,
        "workers_by_status": workers_by_status,
        "lost_tasks": {"tasks": sum(lost), "runs": len(lost)},
        "allocations": allocation_documents(physical),
        "recent_runs": run_documents(db, recent_runs),
    }


def store_text(backend: str, url: str) -> Wrap:
    """The store's URL whole, broken after a ``/`` where it is wider than the line: a cut
    path names no file."""
    first, *rest = url.split("/")
    return Wrap([f"{backend} {first}", *rest], sep="/")


def server_text(backend: str, server: dict[str, Any]) -> str:
    """Server and version, and the memory the data takes: Redis's ``used_memory_human``, an
    SQLite file's size on disk."""
    text = f"{server.get('server', backend)} {server.get('server_version') or '?'}"
    if server.get("used_memory_human"):
        return f"{text}, {server['used_memory_human']} used"
    if isinstance(server.get("file_size_bytes"), int):
        return f"{text}, {format_bytes(server['file_size_bytes'])} on disk"
    return text


@click.command(
    epilog=examples(
        "merlin-tracking --url redis://localhost:6379/0 info",
        "merlin-tracking info --recent 10 --json",
    )
)
@click.option(
    "--recent",
    type=click.IntRange(min=0),
    metavar="N",
    default=5,
    show_default=True,
    help="How many of the newest runs to list.",
)
@json_option
@pass_state
def info(state: CliState, recent: int, as_json: bool) -> None:
    """Backend and version, counts per record type, runs per status, tasks lost with dead
    workers in active runs, live vs stalled vs stopped workers, and the most recent runs."""
    document = info_document(state, recent)
    if as_json:
        echo_json(document)
        return
    server = document["server"]
    counts = document["counts"]
    workers = document["workers_by_status"]
    by_status = document["runs_by_status"]
    lost = document["lost_tasks"]
    pairs: list[tuple[str, object]] = [
        ("Version", f"merlin_tracking {document['version']}"),
        ("Store", store_text(document["backend"], document["url"])),
        ("Prefix", document["prefix"]),
        ("Server", server_text(document["backend"], server)),
        (
            "Records",
            ", ".join(
                [
                    plural(counts["study"], "study", "studies"),
                    plural(counts["run"], "run"),
                    plural(counts["logical_worker"], "logical worker"),
                    plural(counts["physical_worker"], "physical worker"),
                ]
            ),
        ),
        ("Runs", "  ".join(f"{status} {n}" for status, n in by_status.items() if n) or "none"),
        (
            "Workers",
            f"{workers['RUNNING']} live, {workers['STALLED']} stalled, "
            f"{workers['STOPPED']} stopped, {workers['REBOOTING']} rebooting",
        ),
    ]
    if lost["tasks"]:  # below the runs line
        tasks, runs = plural(lost["tasks"], "task"), plural(lost["runs"], "active run")
        pairs.insert(len(pairs) - 1, ("Lost", f"{tasks} with dead workers, in {runs}"))
    if document["allocations"]:
        pairs.append(("Allocations", "; ".join(map(allocation_text, document["allocations"]))))
    echo_lines(render_fields(pairs))
    if document["recent_runs"]:
        click.echo()
        click.echo("Most recent runs")
        echo_lines(runs_table(document["recent_runs"]))
