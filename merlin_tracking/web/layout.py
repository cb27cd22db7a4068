"""The page shell (navigation, the package's own stylesheet and script) and the small HTML
helpers every page uses. Text from the ledger only reaches a page through ``text()`` (or
``html.escape`` in ``charts.py``), so a study named ``<script>`` shows as text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import quote

from merlin_tracking.version import __version__

NAV = (("/runs", "Runs"), ("/workers", "Workers"), ("/studies", "Studies"))


def text(value: object) -> str:
    """Escaped text; None reads ``-``."""
    return "-" if value is None else escape(str(value), quote=True)


def link(path: str, *segments: str, label: object = None) -> str:
    """A link to ``path`` followed by URL-quoted ``segments`` (ids from the ledger)."""
    href = path + "".join("/" + quote(str(s), safe="") for s in segments)
    shown = segments[-1] if label is None and segments else label
    return f'<a href="{escape(href, quote=True)}">{text(shown)}</a>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table whose cells are already HTML (escape them with ``text``)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells, classes = (row[1:], row[0]) if css == "classed" else (row, "")
        body.append(
            f'<tr class="{escape(classes)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, active: str, live: str, before: str = "", poll: bool = True) -> str:
    """A whole page: ``before`` stays put (forms), ``live`` is the part the script refreshes
    (``?partial=1`` of the same address answers it alone)."""
    nav = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{name}</a>'
        for href, name in NAV
    )
    poll_attr = ' data-poll="1000"' if poll else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)} · merlin_tracking</title>"
        '<link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/app.js" defer></script></head><body>'
        f'<header><span class="brand">merlin_tracking</span><nav>{nav}</nav>'
        f'<span class="muted" id="updated"></span></header>'
        f"<h1>{text(title)}</h1>{before}"
        f'<main id="live"{poll_attr}>{live}</main>'
        f'<footer class="muted">merlin_tracking {escape(__version__)} · read from the ledger'
        "</footer></body></html>"
    )
