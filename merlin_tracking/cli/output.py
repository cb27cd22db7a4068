"""Human output that fits the terminal (aligned tables, label/value blocks) and JSON documents.

Every cell is one line: control characters become spaces and values too wide for their column
are elided with ``…``, so a row is never wrapped. Widths count East Asian wide characters as two
columns and combining marks as none.
"""

from __future__ import annotations

import json
import shutil
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import click

ELLIPSIS = "…"
DEFAULT_WIDTH = 80
MIN_WIDTH = 40
GAP = "  "

Elide = Literal["end", "start", "middle"]


def output_width() -> int:
    """The terminal's width on a terminal, else 80 (pipes and files get 80-column tables)."""
    if sys.stdout.isatty():
        return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)
    return DEFAULT_WIDTH


# ---------------------------------------------------------------------------- text
def clean(value: object) -> str:
    """One printable line: control and line-separator characters become spaces, format
    characters (zero-width, bidi overrides) are dropped."""
    text = "" if value is None else str(value)
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp", "Cs"):
            out.append(" ")
        elif category != "Cf":
            out.append(char)
    return "".join(out)


def char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(char) for char in text)


def _take(text: str, width: int) -> str:
    """The longest prefix of ``text`` at most ``width`` columns wide."""
    used = 0
    for end, char in enumerate(text):
        used += char_width(char)
        if used > width:
            return text[:end]
    return text


def _take_last(text: str, width: int) -> str:
    return _take(text[::-1], width)[::-1]


def elide(text: str, width: int, where: Elide = "end") -> str:
    """``text`` cut to ``width`` columns with ``…`` where the cut is (end, start or middle)."""
    if text_width(text) <= width:
        return text
    if width <= 0:
        return ""
    room = width - 1
    if where == "start":
        return ELLIPSIS + _take_last(text, room)
    if where == "middle":
        head = _take(text, (room + 1) // 2)
        return head + ELLIPSIS + _take_last(text, room - text_width(head))
    return _take(text, room) + ELLIPSIS


def pad(text: str, width: int, align: Literal["left", "right"] = "left") -> str:
    fill = " " * max(0, width - text_width(text))
    return fill + text if align == "right" else text + fill


# ---------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Column:
    """A table column. ``min_width`` set: the column may shrink to it, eliding at ``elide``."""

    header: str
    min_width: int | None = None
    elide: Elide = "end"
    align: Literal["left", "right"] = "left"


def _fit(natural: list[int], floors: list[int | None], budget: int) -> list[int]:
    widths = list(natural)
    while sum(widths) > budget:
        slack = [
            (widths[i] - floor, i)
            for i, floor in enumerate(floors)
            if floor is not None and widths[i] > floor
        ]
        if not slack:
            break
        _, widest = max(slack)
        widths[widest] -= 1
    return widths


def render_table(
    columns: Sequence[Column], rows: Iterable[Sequence[object]], width: int | None = None
) -> list[str]:
    """Lines of an aligned table no wider than ``width`` (default: ``output_width()``)."""
    width = output_width() if width is None else width
    cells = [[clean(cell) for cell in row] for row in rows]
    headers = [column.header for column in columns]
    natural = [
        max([text_width(headers[i]), *(text_width(row[i]) for row in cells)])
        for i in range(len(columns))
    ]
    budget = width - len(GAP) * (len(columns) - 1)
    widths = _fit(natural, [c.min_width for c in columns], budget)
    if sum(widths) > budget:  # still too wide: every column gives way, down to one column
        widths = _fit(widths, [1] * len(columns), budget)

    def line(values: Sequence[str]) -> str:
        parts = [
            pad(elide(value, widths[i], columns[i].elide), widths[i], columns[i].align)
            for i, value in enumerate(values)
        ]
        return GAP.join(parts).rstrip()

    return [line(headers), *(line(row) for row in cells)]


@dataclass(frozen=True)
class Wrap:
    """A ``render_fields`` value shown on as many lines as it needs, broken between items
    (``sep`` ends every line but the last); an item too wide for a line is elided."""

    items: Sequence[object]
    sep: str = ", "


def wrap_items(items: Sequence[object], width: int, sep: str = ", ") -> list[str]:
    """``items`` joined with ``sep``, broken between items into lines of at most ``width``
    columns where they allow it (one item wider than that stays whole, for the caller to elide).
    """
    lines: list[str] = []
    current = ""
    for index, item in enumerate(items):
        text = clean(item) + (sep if index < len(items) - 1 else "")
        if current and text_width(current + text.rstrip()) > width:
            lines.append(current.rstrip())
            current = ""
        current += text
    return [*lines, current.rstrip()] if current else lines or [""]


def render_fields(pairs: Sequence[tuple[str, object]], width: int | None = None) -> list[str]:
    """``Label   value`` lines, values elided to the width (``Wrap`` values: wrapped)."""
    width = output_width() if width is None else width
    label_width = max((len(label) for label, _ in pairs), default=0)
    room = max(1, width - label_width - len(GAP))
    lines = []
    for label, value in pairs:
        if isinstance(value, Wrap):
            texts = wrap_items(value.items, room, value.sep)
        else:
            texts = [clean(value)]
        for index, text in enumerate(texts):
            shown = label if index == 0 else ""
            lines.append(f"{shown.ljust(label_width)}{GAP}{elide(text, room)}".rstrip())
    return lines


def echo_lines(lines: Iterable[str]) -> None:
    for text in lines:
        click.echo(text)


def fit(text: object, width: int | None = None) -> str:
    """One line of free text, elided to the output width."""
    return elide(clean(text), output_width() if width is None else width)


def echo_fit(text: object, err: bool = False) -> None:
    click.echo(fit(text), err=err)


def echo_json(document: Any, compact: bool = False) -> None:
    """Print one JSON document (ASCII-safe, keys in their documented order)."""
    if compact:
        click.echo(json.dumps(document, separators=(",", ":")))
    else:
        click.echo(json.dumps(document, indent=2))


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


# ---------------------------------------------------------------------------- time
def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime | None, seconds: bool = False) -> str:
    """``2024-05-01 12:34`` in UTC (``-`` when unknown)."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    )


def format_bytes(size: int) -> str:
    """``512B``, ``1.5K``, ``20.3M``, ``1.2G``: Redis's own style (``used_memory_human``)."""
    if size < 1024:
        return f"{size}B"
    value = size / 1024
    for unit in ("K", "M"):
        if value < 1024:
            return f"{value:.2f}{unit}"
        value /= 1024
    return f"{value:.2f}G"


def format_duration(seconds: float) -> str:
    """``45s``, ``3m 05s``, ``2h 04m``, ``3d 02h``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_seconds(seconds: float | None) -> str:
    """A duration that keeps short ones exact: ``0.12s``, ``4.5s``, ``45.3s``, then as
    ``format_duration`` (``3m 05s``); ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 0.995:
        return f"{seconds:.2f}s"
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    return format_duration(seconds)


def format_age(moment: datetime | None, now: datetime | None = None) -> str:
    """``12s ago``, ``3h ago`` (the largest unit only), ``-`` when unknown."""
    if moment is None:
        return "-"
    seconds = max(0, int(((now or utcnow()) - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
