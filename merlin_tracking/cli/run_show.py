"""``runs show``: one run with its counters, queues, workers and timings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from merlin_tracking.cli.context import CliState, pass_state
from merlin_tracking.cli.documents import (
    is_alive,
    logical_document,
    physical_document,
    run_document,
    study_document,
)
from merlin_tracking.cli.options import examples, json_option
from merlin_tracking.cli.output import (
    Column,
    echo_json,
    echo_lines,
    format_age,
    format_duration,
    format_time,
    plural,
    render_fields,
    render_table,
    utcnow,
)
from merlin_tracking.records import LogicalWorker, PhysicalWorker


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _workers_table(
    logical: Sequence[LogicalWorker], physical: Sequence[PhysicalWorker]
) -> list[str]:
    columns = (
        Column("LOGICAL", min_width=6),
        Column("QUEUES", min_width=6),
        Column("PROCESS", min_width=8),
        Column("ALIVE"),
        Column("STATUS"),
        Column("HEARTBEAT"),
    )
    rows: list[tuple[str, ...]] = []
    for lw in logical:
        processes = [pw for pw in physical if pw.logical_worker_id == lw.id]
        queues = ",".join(lw.queues)
        if not processes:
            rows.append((lw.name, queues, "-", "no", "-", "-"))
        for pw in processes:
            rows.append(
                (
                    lw.name,
                    queues,
                    pw.name,
                    "yes" if is_alive(pw) else "no",
                    pw.status.value,
                    format_age(pw.heartbeat_timestamp),
                )
            )
    return render_table(columns, rows)


@click.command(
    "show",
    epilog=examples(
        "merlin-tracking runs show r12",
        "merlin-tracking runs show /scratch/studies/sweep_20240501 --json",
    ),
)
@click.argument("run", metavar="RUN_ID|WORKSPACE")
@json_option
@pass_state
def show_run(state: CliState, run: str, as_json: bool) -> None:
    """A run with its counters, queues, workers (and whether each is alive) and timings."""
    details = state.settled_db().run_details(run)
    record, study = details.run, details.study
    logical, physical = details.logical_workers, details.physical_workers
    document = run_document(record, study.name if study else None)
    if as_json:
        echo_json(
            {
                "run": document,
                "study": study_document(study) if study else None,
                "logical_workers": [logical_document(lw, physical) for lw in logical],
                "physical_workers": [physical_document(pw) for pw in physical],
            }
        )
        return
    counters = record.counters
    share = document["progress"]
    pairs: list[tuple[str, object]] = [
        ("Run", record.id),
        ("Workspace", record.workspace),
        ("Study", f"{study.name} ({study.id})" if study else "-"),
        ("Status", record.status.value),
        (
            "Progress",
            f"{record.tasks_finished}/{record.tasks_queued} tasks finished"
            + (f" ({share:.0%})" if share is not None else ""),
        ),
        ("Tasks", ", ".join(f"{name} {n}" for name, n in counters.items())),
        ("Queues", ", ".join(record.queues) or "-"),
        ("Created", format_time(record.created_at, seconds=True) + " UTC"),
        ("Updated", format_time(record.updated_at, seconds=True) + " UTC"),
        (
            "Elapsed",
            format_duration(document["elapsed_seconds"]) + (" so far" if record.is_active else ""),
        ),
    ]
    if record.publishing:
        pairs.append(("Publishing", plural(record.publishing, "launch", "launches") + " running"))
    if record.is_active and record.settle_until is not None and record.settle_until > utcnow():
        until = format_time(record.settle_until, seconds=True)
        pairs.append(("Settling", f"more tasks may still arrive until {until} UTC"))
    optional = {
        "Parent": record.parent,
        "Child": record.child,
        "Parameters": _json_text(record.parameters) if record.parameters else None,
        "Samples": _json_text(record.samples) if record.samples is not None else None,
        "Extra": _json_text(record.additional_data) if record.additional_data else None,
    }
    pairs.extend((label, value) for label, value in optional.items() if value is not None)
    echo_lines(render_fields(pairs))
    click.echo()
    if logical:
        click.echo("Workers")
        echo_lines(_workers_table(logical, physical))
    else:
        click.echo("Workers   none attached")
