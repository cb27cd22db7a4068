"""The HTML of the pages: runs, one run, workers, studies. Each function turns the API's
documents (``queries.py``) into the page's live part, so page and API never disagree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from merlin_tracking.records import RunStatus, Task
from merlin_tracking.web import charts
from merlin_tracking.web.layout import link, table, text
from merlin_tracking.web.security import CSRF_FIELD

#: Above this many tasks the run page leaves its charts to the report (they read every task).
CHART_TASK_LIMIT = 20_000
STATUSES = [status.value for status in RunStatus]


def _age(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    seconds = (now - datetime.fromisoformat(iso)).total_seconds()
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _time(iso: str | None) -> str:
    return "-" if not iso else text(iso[:19].replace("T", " "))


def _status(doc: Mapping[str, Any]) -> str:
    status = str(doc["status"])
    mark = " *" if doc.get("settling") else ""
    return f'<span class="badge {text(status)}">{text(status)}{mark}</span>'


def _lost(n: int) -> str:
    return f' <span class="badge lost">{n} lost</span>' if n else ""


def run_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for doc in runs:
        stalled = doc["status"] == RunStatus.STALLED.value
        rows.append(
            [
                "stalled" if stalled or doc["tasks_lost"] else "",
                link("/runs", doc["id"]),
                _status(doc) + _lost(doc["tasks_lost"]),
                charts.progress_bar(doc["progress"], stalled)
                + f' <span class="muted">{doc["tasks_finished"]}/{doc["tasks_queued"]}</span>',
                text(doc["study_name"]),
                text(", ".join(doc["queues"])),
                _time(doc["created_at"]),
                text(doc["workspace"]),
            ]
        )
    return rows


RUN_HEADERS = ("Run", "Status", "Progress", "Study", "Queues", "Created", "Workspace")


def runs_filters(params: Mapping[str, str]) -> str:
    """The filter form (outside the live part, so refreshing never disturbs typing)."""

    def field(name: str, label: str, hint: str) -> str:
        value = text(params.get(name) or "")
        return f'<label>{label}<input name="{name}" value="{value}" placeholder="{hint}"></label>'

    current = params.get("status") or ""
    options = "".join(
        f"<option{' selected' if s == current.upper() else ''}>{s}</option>" for s in STATUSES
    )
    return (
        '<form class="filters" method="get" action="/runs">'
        + field("study", "Study", "name or id")
        + f'<label>Status<select name="status"><option value="">any</option>{options}</select></label>'
        + field("queue", "Queue", "queue")
        + field("worker", "Worker", "name or id")
        + field("since", "Since", "2h, 2024-05-01")
        + field("until", "Until", "30m")
        + '<button type="submit">Filter</button></form>'
    )


def _pager(base: str, params: Mapping[str, str], doc: Mapping[str, Any]) -> str:
    offset, limit, total = doc["offset"], doc["limit"], doc["total"]
    kept = {k: v for k, v in params.items() if k not in ("offset", "partial") and v}
    parts = [
        f'<span class="muted">{offset + 1 if total else 0}-{offset + doc["count"]} of {total}</span>'
    ]
    if offset > 0:
        query = urlencode({**kept, "offset": max(0, offset - limit)})
        parts.append(f'<a href="{base}?{text(query)}">← newer</a>')
    if offset + limit < total:
        query = urlencode({**kept, "offset": offset + limit})
        parts.append(f'<a href="{base}?{text(query)}" rel="next">older →</a>')
    return '<p class="pager">' + " ".join(parts) + "</p>"


def runs_live(doc: Mapping[str, Any], params: Mapping[str, str]) -> str:
    stalled = doc["stalled"]
    summary = f"{doc['total']} runs" + (
        f', <span class="badge STALLED">{stalled} stalled</span>' if stalled else ""
    )
    return (
        f"<p>{summary}</p>"
        + table(RUN_HEADERS, run_rows(doc["runs"]), css="classed")
        + _pager("/runs", params, doc)
    )


def _tasks_table(tasks: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            text(t["id"]),
            text(t["name"]),
            text(t["worker"]),
            text(t["attempts"]),
            f'<span class="error">{text(t["error"])}</span>',
        ]
        for t in tasks
    ]
    return table(("Task", "Name", "Worker", "Attempts", "Error"), rows)


def _workers_of_run(doc: Mapping[str, Any], now: datetime) -> str:
    rows = []
    for lw in doc["logical_workers"]:
        processes = [pw for pw in doc["physical_workers"] if pw["logical_worker_id"] == lw["id"]]
        queues = text(", ".join(lw["queues"]))
        if not processes:
            rows.append([text(lw["name"]), queues, "-", "no", "-", "-"])
        for pw in processes:
            rows.append(
                [
                    text(lw["name"]),
                    queues,
                    link("/workers", pw["id"], label=pw["name"]),
                    "yes" if pw["alive"] else "<strong>no</strong>",
                    f'<span class="badge {text(pw["status"])} worker">{text(pw["status"])}</span>',
                    _age(pw["heartbeat_timestamp"], now),
                ]
            )
    return table(("Logical worker", "Queues", "Process", "Alive", "Status", "Heartbeat"), rows)


def actions(run: Mapping[str, Any], csrf: str, writable: bool) -> str:
    """Cancel, requeue lost and delete forms; shown only when the server allows writes."""
    if not writable:
        return ""
    run_id = text(run["id"])
    hidden = f'<input type="hidden" name="{CSRF_FIELD}" value="{text(csrf)}">'
    buttons = []
    if run["active"]:
        buttons.append(("cancel", "Cancel run"))
    if run["tasks_lost"]:
        buttons.append(("requeue", "Requeue lost tasks"))
    buttons.append(("delete", "Delete run"))
    forms = "".join(
        f'<form class="inline" method="post" action="/runs/{run_id}/{verb}">{hidden}'
        f'<button type="submit" name="action" value="{verb}">{label}</button></form> '
        for verb, label in buttons
    )
    return f'<p class="actions">{forms}<a href="/login">log in</a></p>'


def run_live(
    doc: Mapping[str, Any], tasks: Sequence[Task] | None, now: datetime, actions_html: str
) -> str:
    """One run: counters, why it is stalled, charts, failed and lost tasks, its workers."""
    run = doc["run"]
    study = doc["study"]
    counters = "".join(
        f"<span><strong>{text(n)}</strong> {text(name)}</span>"
        for name, n in run["counters"].items()
    )
    facts = [
        ("Status", _status(run) + _lost(run["tasks_lost"])),
        (
            "Progress",
            charts.progress_bar(run["progress"], run["status"] == "STALLED")
            + f" {run['tasks_finished']}/{run['tasks_queued']} tasks finished",
        ),
        ("Study", link("/studies", study["id"], label=study["name"]) if study else "-"),
        ("Workspace", text(run["workspace"])),
        ("Queues", text(", ".join(run["queues"]) or None)),
        ("Created", _time(run["created_at"])),
        ("Started", _time(run["started_at"])),
        ("Finished", _time(run["finished_at"])),
        ("Duration", f"{run['elapsed_seconds']:.1f}s" + (" so far" if run["active"] else "")),
    ]
    if doc["stalled_reason"]:
        facts.insert(1, ("Stalled", f'<span class="error">{text(doc["stalled_reason"])}</span>'))
    parts = [
        '<table class="facts">'
        + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
        + "</table>",
        f'<p class="counters">{counters}</p>',
        actions_html,
    ]
    if tasks is None:
        parts.append(
            f'<p class="notice">{run["tasks_queued"]} tasks: the charts are in the '
            f'<a href="/runs/{text(run["id"])}/report">report</a>.</p>'
        )
    else:
        parts += charts.sections(tasks, now)[0]
        parts.append(f'<p><a href="/runs/{text(run["id"])}/report">Self-contained report</a></p>')
    parts += [
        f"<h2>Failed tasks ({run['tasks_failed']})</h2>",
        _tasks_table(doc["failed_tasks"]),
        f'<h2 id="lost">Lost tasks ({run["tasks_lost"]})</h2>',
        _tasks_table(doc["lost_tasks"]),
        "<h2>Workers</h2>",
        _workers_of_run(doc, now),
    ]
    return "".join(parts)


def workers_live(doc: Mapping[str, Any], now: datetime) -> str:
    uncovered = doc["uncovered_queues"]
    notice = (
        '<p class="notice">Queues of active runs with no live consumer: '
        + ", ".join(f'<span class="badge STALLED">{text(q)}</span>' for q in uncovered)
        + "</p>"
        if uncovered
        else '<p class="muted">Every queue of an active run has a live consumer.</p>'
    )
    logical_rows = [
        [
            text(lw["id"]),
            text(lw["name"]),
            text(", ".join(lw["queues"])),
            text(len(lw["runs"])),
            f"{lw['live_physical_workers']}/{len(lw['physical_workers'])}",
        ]
        for lw in doc["logical_workers"]
    ]
    physical_rows = [
        [
            "" if pw["alive"] or pw["status"] == "STOPPED" else "stalled",
            text(pw["name"]),
            f'<span class="badge {text(pw["status"])} worker">{text(pw["status"])}</span>',
            text(pw["host"]),
            text(pw["pid"]),
            _age(pw["heartbeat_timestamp"], now),
            _job(pw, now),
            text(", ".join((pw["args"] or {}).get("queues") or [])),
        ]
        for pw in doc["physical_workers"]
    ]
    return (
        notice
        + "<h2>Logical workers</h2>"
        + table(("ID", "Name", "Queues", "Runs", "Live"), logical_rows)
        + "<h2>Physical workers</h2>"
        + table(
            ("Node", "Status", "Host", "PID", "Heartbeat", "Scheduler job", "Queues"),
            physical_rows,
            css="classed",
        )
    )


def _job(pw: Mapping[str, Any], now: datetime) -> str:
    """The batch allocation a physical worker runs in: "slurm 1234 (ends in 5m)"."""
    if not pw.get("job_id"):
        return ""
    shown = f"{text(pw.get('scheduler') or '')} {text(pw['job_id'])}".strip()
    ends = pw.get("job_ends_at")
    if ends:
        left = (datetime.fromisoformat(ends) - now).total_seconds()
        when = f"ends in {left / 60:.0f}m" if left > 0 else "ended"
        shown += f' <span class="muted">({when})</span>'
    return shown


def studies_live(doc: Mapping[str, Any], params: Mapping[str, str]) -> str:
    rows = [
        [
            link("/studies", s["id"], label=s["name"]),
            text(s["id"]),
            text(len(s["runs"])),
            _time(s["created_at"]),
        ]
        for s in doc["studies"]
    ]
    return table(("Study", "ID", "Runs", "Created"), rows) + _pager("/studies", params, doc)


def study_live(doc: Mapping[str, Any]) -> str:
    return table(RUN_HEADERS, run_rows(doc["runs"]), css="classed")


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
