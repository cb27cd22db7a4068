"""``watch``: a refreshing view of active runs and of the workers that are not stopped.

The title of the runs section counts the STALLED and settling runs among them (also those past
``--limit``); a settling run's status is marked ``*`` as in ``runs list``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import newest_first, physical_document, run_documents
from merlin_tracking.cli.options import examples, json_option
from merlin_tracking.cli.output import (
    Column,
    echo_json,
    echo_lines,
    fit,
    format_age,
    format_time,
    output_width,
    render_table,
    utcnow,
)
from merlin_tracking.cli.runs import progress_cell, settling_note, stalled_count, status_cell
from merlin_tracking.records import WorkerStatus
from merlin_tracking.records.run import ACTIVE_STATUSES

BAR_WIDTH = 10


def progress_bar(share: float | None) -> str:
    """``[######----]  60%``; an empty bar before any task is queued."""
    if share is None:
        return "[" + "-" * BAR_WIDTH + "]    -"
    filled = int(share * BAR_WIDTH)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {share:4.0%}"


def frame_document(state: CliState) -> dict[str, Any]:
    """One frame: active runs (newest first) and physical workers not STOPPED."""
    db = state.settled_db()
    runs = newest_first(db.runs.get_all({"status": [s.value for s in ACTIVE_STATUSES]}))
    shown = [s.value for s in WorkerStatus if s is not WorkerStatus.STOPPED]
    physical = db.physical_workers.get_all({"status": shown})
    logical_ids = sorted({pw.logical_worker_id for pw in physical if pw.logical_worker_id})
    logical = {lw.id: lw.name for lw in db.logical_workers.get_many(logical_ids)}
    workers = [
        {**physical_document(pw), "logical_worker_name": logical.get(pw.logical_worker_id or "")}
        for pw in physical
    ]
    return {
        "generated_at": utcnow().isoformat(),
        "url": db.url,
        "prefix": state.resolve()[1],
        "runs": run_documents(db, runs),
        "workers": workers,
    }


def _limited(lines: list[str], total: int, limit: int) -> list[str]:
    if total > limit:
        lines.append(f"… and {total - limit} more")
    return lines


WATCH_RUN_COLUMNS = (
    Column("ID"),
    Column("STATUS"),
    Column("PROGRESS"),
    Column("TASKS", align="right"),
    Column("STUDY", min_width=5),
    Column("WORKSPACE", min_width=8, elide="start"),
)
WATCH_WORKER_COLUMNS = (
    Column("NAME", min_width=10),
    Column("STATUS"),
    Column("ALIVE"),
    Column("HOST", min_width=6),
    Column("HEARTBEAT"),
    Column("LOGICAL", min_width=6),
)


def _run_row(run: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        run["id"],
        status_cell(run),
        progress_bar(run["progress"]),
        progress_cell(run),
        run["study_name"] or "-",
        run["workspace"],
    )


def _worker_row(pw: Mapping[str, Any]) -> tuple[str, ...]:
    beat = pw["heartbeat_timestamp"]
    return (
        pw["name"],
        pw["status"],
        "yes" if pw["alive"] else "no",
        pw["host"] or "-",
        format_age(datetime.fromisoformat(beat) if beat else None),
        pw["logical_worker_name"] or "-",
    )


def _section(
    title: str,
    items: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    row: Callable[[Mapping[str, Any]], tuple[str, ...]],
    limit: int,
    width: int,
    notes: Sequence[str] = (),
) -> list[str]:
    """A titled table of at most ``limit`` rows ("none" when empty); ``notes`` join the count
    in the title: ``Active runs (12, 2 stalled)``."""
    lines = [fit(f"{title} ({', '.join([str(len(items)), *notes])})", width)]
    if not items:
        return [*lines, "  none"]
    table = render_table(columns, [row(item) for item in items[:limit]], width)
    return lines + _limited(table, len(items), limit)


def _run_notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    stalled = stalled_count(runs)
    settling = sum(1 for run in runs if run["settling"])
    return [f"{n} {what}" for n, what in ((stalled, "stalled"), (settling, "settling")) if n]


def render_frame(frame: Mapping[str, Any], limit: int, width: int | None = None) -> list[str]:
    width = output_width() if width is None else width
    stamp = format_time(datetime.fromisoformat(frame["generated_at"]), seconds=True)
    runs = frame["runs"]
    return [
        fit(f"merlin-tracking watch  {frame['url']}  prefix {frame['prefix']}", width),
        fit(f"{stamp} UTC  (Ctrl-C to stop)", width),
        "",
        *_section("Active runs", runs, WATCH_RUN_COLUMNS, _run_row, limit, width, _run_notes(runs)),
        *(fit(note, width) for note in settling_note(runs[:limit])),
        "",
        *_section("Workers", frame["workers"], WATCH_WORKER_COLUMNS, _worker_row, limit, width),
    ]


@click.command(
    epilog=examples(
        "merlin-tracking watch",
        "merlin-tracking watch --interval 10",
        "merlin-tracking watch --once --json",
    )
)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.0, min_open=True),
    metavar="SECONDS",
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after this many frames (default: until Ctrl-C).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    default=20,
    show_default=True,
    help="Rows per table.",
)
@json_option
@pass_state
def watch(
    state: CliState, once: bool, interval: float, count: int | None, limit: int, as_json: bool
) -> None:
    """A live, refreshing table of active runs (progress, status) and workers (alive or
    stalled), until Ctrl-C. The runs title counts the STALLED and settling runs; a settling
    run's status is marked *. With --json, one JSON document per frame, one per line (--once:
    a single, indented document)."""
    frames = 1 if once else count
    shown = 0
    try:
        while True:
            frame = frame_document(state)
            if as_json:
                echo_json(frame, compact=not once)
            else:
                if once:
                    pass
                elif sys.stdout.isatty():
                    click.clear()
                elif shown:
                    click.echo()  # piped output keeps every frame, a blank line apart
                echo_lines(render_frame(frame, limit))
            shown += 1
            if frames is not None and shown >= frames:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo()
