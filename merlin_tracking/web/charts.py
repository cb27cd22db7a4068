"""SVG charts of a run's tasks, drawn by the package: no script, font or file from elsewhere,
so they work on a login node with no internet and inside the self-contained report.

Each chart's size is bounded whatever the number of tasks: past ``DETAIL_LIMIT`` tasks the
timeline draws how busy each worker was per time slice instead of one bar per task. Every
string from the ledger goes through ``html.escape``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from merlin_tracking.records import Task, TaskState
from merlin_tracking.records.task import FINISHED_TASK_STATES

WIDTH = 900
LEFT = 170  # room for the lane labels
RIGHT = 12
LANE = 18
DETAIL_LIMIT = 2000  # tasks drawn one by one in the timeline
SLICES = 240  # time slices of the busy view and of the throughput chart
MAX_LANES = 40  # workers drawn; the rest share one lane
STATE_COLOURS = {
    TaskState.SUCCEEDED: "#2e8b57",
    TaskState.FAILED: "#c0392b",
    TaskState.LOST: "#d35400",
    TaskState.REVOKED: "#7f8c8d",
    TaskState.STARTED: "#2980b9",
    TaskState.RECEIVED: "#8e44ad",
    TaskState.RETRY: "#f1c40f",
    TaskState.QUEUED: "#bdc3c7",
}


@dataclass(frozen=True)
class Span:
    """A task's time on a worker, in seconds since the run's first start."""

    worker: str
    start: float
    end: float
    state: TaskState
    label: str


Prepared = tuple[list[Span], float]


def spans(tasks: Sequence[Task], now: datetime) -> Prepared:
    """The spans of started tasks (running ones end ``now``) and the time they cover. The
    charts of one run share them: compute once, pass as ``prepared``."""
    started = [t for t in tasks if t.started_at is not None]
    if not started:
        return [], 0.0
    origin = min(t.started_at.timestamp() for t in started if t.started_at is not None)
    now_s = now.timestamp()
    out = []
    for task in started:
        assert task.started_at is not None
        start_s = task.started_at.timestamp() - origin
        end_s = (task.finished_at.timestamp() if task.finished_at else now_s) - origin
        out.append(
            Span(task.worker or "?", start_s, max(start_s, end_s), task.state, task.name or task.id)
        )
    return out, max((s.end for s in out), default=0.0)


def _frame(height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}">'
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>' + "".join(body) + "</svg>"
    )


def _empty(title: str) -> str:
    return _frame(
        40, title, [f'<text x="10" y="25" class="muted">{escape(title)}: no data yet</text>']
    )


def _axis(y: int, span: float) -> list[str]:
    """A time axis along ``y``: five ticks from 0 to ``span`` seconds."""
    plot = WIDTH - LEFT - RIGHT
    parts = [f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#999"/>']
    for i in range(6):
        x = LEFT + plot * i / 5
        parts.append(
            f'<text x="{x:.1f}" y="{y + 14}" font-size="11" text-anchor="middle">'
            f"{_format_seconds(span * i / 5)}</text>"
        )
    return parts


def _format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g}s"
    if seconds < 3600:
        return f"{seconds / 60:.3g}m"
    return f"{seconds / 3600:.3g}h"


def _lanes(all_spans: Sequence[Span]) -> list[str]:
    busiest: dict[str, float] = defaultdict(float)
    for s in all_spans:
        busiest[s.worker] += s.end - s.start
    names = sorted(busiest, key=lambda w: (-busiest[w], w))
    kept = sorted(names[:MAX_LANES])
    if len(names) > MAX_LANES:
        kept.append("other workers")
    return kept


def timeline(tasks: Sequence[Task], now: datetime, prepared: Prepared | None = None) -> str:
    """One lane per worker: a bar per task coloured by state, or past ``DETAIL_LIMIT`` tasks
    the share of each time slice the worker spent running tasks."""
    title = "Tasks per worker over time"
    all_spans, span = prepared or spans(tasks, now)
    if not all_spans:
        return _empty(title)
    lanes = _lanes(all_spans)
    index = {name: i for i, name in enumerate(lanes)}
    other = len(lanes) - 1 if lanes[-1] == "other workers" else None
    height = len(lanes) * LANE + 30
    plot = WIDTH - LEFT - RIGHT
    scale = plot / span if span > 0 else 0.0
    body = [
        f'<text x="{LEFT - 6}" y="{i * LANE + 13}" font-size="11" text-anchor="end">'
        f"{escape(name[-28:])}</text>"
        for i, name in enumerate(lanes)
    ]
    if len(all_spans) <= DETAIL_LIMIT:
        for s in all_spans:
            lane = index.get(s.worker, other if other is not None else 0)
            width = max(1.0, (s.end - s.start) * scale)
            body.append(
                f'<rect x="{LEFT + s.start * scale:.1f}" y="{lane * LANE + 2}" '
                f'width="{width:.1f}" height="{LANE - 4}" fill="{STATE_COLOURS[s.state]}">'
                f"<title>{escape(s.label)} {s.state.value} on {escape(s.worker)}</title></rect>"
            )
    else:
        busy = _busy(all_spans, index, other, span)
        slice_width = plot / SLICES
        for (lane, slot), seconds in busy.items():
            share = min(1.0, seconds / (span / SLICES)) if span > 0 else 1.0
            body.append(
                f'<rect x="{LEFT + slot * slice_width:.1f}" y="{lane * LANE + 2}" '
                f'width="{slice_width + 0.2:.1f}" height="{LANE - 4}" fill="#2980b9" '
                f'fill-opacity="{0.15 + 0.85 * min(1.0, share):.2f}"/>'
            )
    body += _axis(len(lanes) * LANE + 4, span)
    return _frame(height, title, body)


def _busy(
    all_spans: Sequence[Span], index: dict[str, int], other: int | None, span: float
) -> dict[tuple[int, int], float]:
    """Seconds of task time per (lane, time slice); capped later to the slice's length."""
    busy: dict[tuple[int, int], float] = defaultdict(float)
    width = span / SLICES if span > 0 else 1.0
    for s in all_spans:
        lane = index.get(s.worker, other if other is not None else 0)
        first = min(SLICES - 1, int(s.start / width))
        last = min(SLICES - 1, int(s.end / width))
        for slot in range(first, last + 1):
            low, high = max(s.start, slot * width), min(s.end, (slot + 1) * width)
            busy[(lane, slot)] += max(high - low, 0.0 if first != last else 1e-9)
    return busy


def _bars(title: str, values: Sequence[float], labels: tuple[str, str], unit: str) -> str:
    """A bar chart of ``values`` over ``labels`` (left and right end of the x axis)."""
    if not values or max(values) <= 0:
        return _empty(title)
    height, top, plot_h = 170, 10, 130
    plot = WIDTH - LEFT - RIGHT
    peak = max(values)
    step = plot / len(values)
    body = [
        f'<text x="{LEFT - 6}" y="{top + 10}" font-size="11" text-anchor="end">'
        f"{peak:.3g} {escape(unit)}</text>",
        f'<text x="{LEFT - 6}" y="{top + plot_h}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, value in enumerate(values):
        if value <= 0:
            continue
        h = plot_h * value / peak
        body.append(
            f'<rect x="{LEFT + i * step:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(step - 0.5, 0.5):.1f}" height="{h:.1f}" fill="#2980b9"/>'
        )
    y = top + plot_h
    body += [
        f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#999"/>',
        f'<text x="{LEFT}" y="{y + 16}" font-size="11">{escape(labels[0])}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{y + 16}" font-size="11" text-anchor="end">'
        f"{escape(labels[1])}</text>",
    ]
    return _frame(height, title, body)


def throughput(tasks: Sequence[Task], now: datetime, prepared: Prepared | None = None) -> str:
    """Tasks finished per second, over the run's time."""
    title = "Throughput (tasks finished per second)"
    all_spans, span = prepared or spans(tasks, now)
    ended = [s.end for s in all_spans if s.state in FINISHED_TASK_STATES]
    if not ended or span <= 0:
        return _empty(title)
    slots = min(SLICES, max(10, len(ended) // 5))
    width = span / slots
    counts = [0.0] * slots
    for end in ended:
        counts[min(slots - 1, int(end / width))] += 1
    rates = [count / width for count in counts]
    return _bars(title, rates, ("0s", _format_seconds(span)), "/s")


def durations(tasks: Sequence[Task]) -> str:
    """How long finished tasks ran: a histogram on a log scale when they span decades."""
    title = "Task durations"
    values = sorted(d for t in tasks if (d := t.duration) is not None and d >= 0)
    if not values:
        return _empty(title)
    low, high = max(values[0], 1e-4), max(values[-1], 1e-4)
    bins = 40
    log = high / low > 100
    counts = [0.0] * bins
    for value in values:
        if log:
            where = (math.log10(max(value, low)) - math.log10(low)) / (
                math.log10(high) - math.log10(low)
            )
        else:
            where = (value - values[0]) / ((values[-1] - values[0]) or 1.0)
        counts[min(bins - 1, int(where * bins))] += 1
    scale = " (log scale)" if log else ""
    return _bars(
        title + scale, counts, (_format_seconds(values[0]), _format_seconds(values[-1])), "tasks"
    )


def utilisation(
    tasks: Sequence[Task], now: datetime, prepared: Prepared | None = None
) -> tuple[str, dict[str, float]]:
    """Each worker's task time over the run's span (above 100% with a pool of several
    processes), as a bar chart and as numbers."""
    title = "Worker utilisation"
    all_spans, span = prepared or spans(tasks, now)
    if not all_spans or span <= 0:
        return _empty(title), {}
    busy: dict[str, float] = defaultdict(float)
    for s in all_spans:
        busy[s.worker] += s.end - s.start
    shares = {worker: seconds / span for worker, seconds in sorted(busy.items())}
    shown = sorted(shares, key=lambda w: (-shares[w], w))[:MAX_LANES]
    peak = max(1.0, max(shares.values()))
    plot = WIDTH - LEFT - RIGHT - 60
    body = []
    for i, worker in enumerate(shown):
        w = plot * shares[worker] / peak
        body += [
            f'<text x="{LEFT - 6}" y="{i * LANE + 13}" font-size="11" text-anchor="end">'
            f"{escape(worker[-28:])}</text>",
            f'<rect x="{LEFT}" y="{i * LANE + 2}" width="{max(w, 1):.1f}" height="{LANE - 4}" '
            f'fill="#16a085"/>',
            f'<text x="{LEFT + w + 4:.1f}" y="{i * LANE + 13}" font-size="11">'
            f"{shares[worker]:.0%}</text>",
        ]
    return _frame(len(shown) * LANE + 8, title, body), shares


def sections(tasks: Sequence[Task], now: datetime) -> tuple[list[str], dict[str, float]]:
    """The charts of a run, headed, in the order the run page and the report show them, and
    each worker's share of the run's span (``utilisation``)."""
    prepared = spans(tasks, now)
    utilisation_svg, shares = utilisation(tasks, now, prepared)
    return [
        "<h2>Timeline</h2>",
        timeline(tasks, now, prepared),
        "<h2>Throughput</h2>",
        throughput(tasks, now, prepared),
        "<h2>Durations</h2>",
        durations(tasks),
        "<h2>Worker utilisation</h2>",
        utilisation_svg,
    ], shares


def progress_bar(share: float | None, stalled: bool = False) -> str:
    """A small inline bar (0..1; None: nothing queued yet), with the percentage as text."""
    percent = 0 if share is None else round(share * 100)
    colour = "#d35400" if stalled else "#2e8b57"
    text = "-" if share is None else f"{percent}%"
    return (
        f'<span class="progress" data-progress="{percent}">'
        f'<svg viewBox="0 0 100 8" width="100" height="8" aria-hidden="true">'
        f'<rect width="100" height="8" fill="#e5e5e5"/>'
        f'<rect width="{percent}" height="8" fill="{colour}"/></svg> {text}</span>'
    )
