"""``merlin-tracking report RUN -o report.html``: one self-contained HTML file of a run.

No script and no external reference: the style is inline and the charts are SVG drawn by
``charts.py``, so the file opens from a laptop or a paper's supplement years later. Its size
is bounded whatever the number of tasks (the charts aggregate, the failures list keeps the
first ``FAILURES_SHOWN`` with a count per error type), so 100,000 tasks stay well under 5 MB.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

from merlin_tracking.cli.documents import run_document
from merlin_tracking.database import TrackingDatabase
from merlin_tracking.records import Task, TaskState
from merlin_tracking.version import __version__
from merlin_tracking.web import charts
from merlin_tracking.web.layout import table, text

FAILURES_SHOWN = 200
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1000px}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1rem}
th,td{text-align:left;padding:.2rem .5rem;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f6f6f6}.muted{color:#777}.error{color:#a61e12;white-space:pre-wrap;word-break:break-word}
.chart{display:block;max-width:960px}
"""


def _error_type(error: str | None) -> str:
    return (error or "?").split(":", 1)[0][:80]


def render_report(db: TrackingDatabase, run: str, now: datetime | None = None) -> str:
    """The report of ``run`` (id or workspace) as one HTML string."""
    now = now or datetime.now(timezone.utc)
    details = db.run_details(run)
    record, study = details.run, details.study
    tasks = db.tasks.get_all({"run_id": record.id})
    doc = run_document(record, study.name if study else None, now)
    return _html(doc, details.physical_workers, tasks, now)


def _html(doc: dict[str, Any], physical: Any, tasks: list[Task], now: datetime) -> str:
    chart_parts, shares = charts.sections(tasks, now)
    troubled = [t for t in tasks if t.state in (TaskState.FAILED, TaskState.LOST)]
    by_type = Counter((t.state.value, _error_type(t.error)) for t in troubled)
    durations = [d for t in tasks if (d := t.duration) is not None]
    mean = sum(durations) / len(durations) if durations else None
    summary = [
        ("Run", text(doc["id"])),
        ("Study", text(doc["study_name"])),
        ("Workspace", text(doc["workspace"])),
        ("Status", text(doc["status"])),
        ("Progress", f"{doc['tasks_finished']}/{doc['tasks_queued']} tasks finished"),
        ("Counters", text(", ".join(f"{k} {v}" for k, v in doc["counters"].items()))),
        ("Queues", text(", ".join(doc["queues"]) or None)),
        ("Created", text(doc["created_at"])),
        ("Started", text(doc["started_at"])),
        ("Finished", text(doc["finished_at"])),
        ("Duration", f"{doc['elapsed_seconds']:.3f} s"),
        ("Task records", str(len(tasks))),
        ("Mean task duration", "-" if mean is None else f"{mean:.3f} s"),
    ]
    workers = [
        [
            text(pw.name),
            text(pw.host),
            text(pw.status.value),
            text(f"{shares[pw.name]:.0%}" if pw.name in shares else None),
        ]
        for pw in physical
    ]
    failures = [
        [
            text(t.id),
            text(t.name),
            text(t.state.value),
            text(t.worker),
            f'<span class="error">{text(t.error)}</span>',
        ]
        for t in troubled[:FAILURES_SHOWN]
    ]
    more = len(troubled) - FAILURES_SHOWN
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Run {text(doc['id'])} · merlin_tracking report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Run {text(doc['id'])}</h1>",
        '<table class="summary">',
        "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in summary),
        "</table>",
        *chart_parts,
        table(("Worker", "Host", "Status", "Utilisation"), workers),
        f"<h2>Failures and lost tasks ({len(troubled)})</h2>",
        table(
            ("State", "Error type", "Tasks"),
            [[text(state), text(kind), str(n)] for (state, kind), n in by_type.most_common()],
        ),
        table(("Task", "Name", "State", "Worker", "Error"), failures),
        f'<p class="muted">… and {more} more</p>' if more > 0 else "",
        f'<p class="muted">Written {text(now.isoformat(timespec="seconds"))} by merlin_tracking '
        f"{text(__version__)} from the ledger.</p></body></html>",
    ]
    return "".join(parts)
