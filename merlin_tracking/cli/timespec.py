"""Times and durations on the command line: ``30s``, ``15m``, ``2h``, ``3d``, ``1w``, ``1h30m``,
or an ISO time (``2024-05-01``, ``2024-05-01T12:00``, ``...Z``, ``...+02:00``).

A duration given where a time is expected means that long ago. ISO times without a timezone are
UTC, like every time the command line prints.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import click

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """``2h`` -> 2 hours; ``ValueError`` unless the text is one or more number+unit parts."""
    if not _DURATION.match(text):
        raise ValueError(
            f"{text!r} is not a duration; use a number and a unit (s, m, h, d, w), e.g. 30m, 2h, "
            "3d or 1h30m"
        )
    seconds = sum(float(n) * UNITS[unit.lower()] for n, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from an ISO time or a duration ago; ``ValueError`` otherwise."""
    now = now or datetime.now(timezone.utc)
    stripped = text.strip()
    if stripped.lower() == "now":
        return now
    if _DURATION.match(stripped):
        return now - parse_duration(stripped)
    iso = stripped[:-1] + "+00:00" if stripped[-1:] in ("Z", "z") else stripped
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO time (2024-05-01, 2024-05-01T12:00Z) nor a duration "
            "ago (30m, 2h, 3d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def duration_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> timedelta | None:
    """A click callback turning an option's text into a ``timedelta`` (usage error if bad)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def moment_option(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """A click callback turning an option's text into an aware UTC ``datetime``."""
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
