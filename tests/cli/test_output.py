"""Table layout, elision and time parsing of the command line (no store needed)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from merlin_tracking.cli.output import (
    Column,
    Wrap,
    clean,
    elide,
    format_age,
    format_duration,
    format_seconds,
    render_fields,
    render_table,
    text_width,
    wrap_items,
)
from merlin_tracking.cli.timespec import parse_duration, parse_moment

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def test_elide_keeps_the_chosen_end() -> None:
    assert elide("abcdefghij", 10) == "abcdefghij"
    assert elide("abcdefghij", 6) == "abcde…"
    assert elide("abcdefghij", 6, "start") == "…fghij"
    assert elide("abcdefghij", 6, "middle") == "abc…ij"
    assert elide("abcdefghij", 1) == "…"
    assert elide("abcdefghij", 0) == ""
    assert elide("日本語のパス", 7) == "日本語…"  # wide characters count two columns


def test_clean_makes_one_line() -> None:
    assert clean("a\nb\tc\r\u2028d") == "a b c  d"
    assert clean("x\u200by\u202e") == "xy"
    assert clean(None) == ""


def test_table_aligns_and_shrinks_only_elastic_columns() -> None:
    columns = (Column("ID"), Column("N", align="right"), Column("PATH", min_width=8, elide="start"))
    lines = render_table(columns, [("a1", "5", "/short"), ("b2", "10", "/x" * 60)], width=30)
    assert lines[0] == "ID   N  PATH"
    assert lines[1] == "a1   5  /short"
    assert lines[2].startswith("b2  10  …") and text_width(lines[2]) == 30


def test_table_never_exceeds_the_width_even_with_rigid_columns() -> None:
    columns = (Column("A" * 30), Column("B" * 30), Column("C", min_width=3))
    for line in render_table(columns, [("x" * 40, "y" * 40, "z" * 40)], width=40):
        assert text_width(line) <= 40


@given(
    st.lists(
        st.tuples(st.text(max_size=60), st.text(max_size=60), st.text(max_size=200)),
        max_size=5,
    ),
    st.integers(min_value=40, max_value=120),
)
def test_any_table_fits_on_one_line_per_row(rows: list[tuple[str, str, str]], width: int) -> None:
    columns = (Column("ID"), Column("NAME", min_width=6), Column("WS", min_width=8, elide="start"))
    lines = render_table(columns, rows, width)
    assert len(lines) == len(rows) + 1
    for line in lines:
        assert text_width(line) <= width and "\n" not in line


def test_fields_elide_values() -> None:
    lines = render_fields([("Run", "abc"), ("Workspace", "/p" * 100)], width=40)
    assert lines[0] == "Run        abc"
    assert text_width(lines[1]) == 40 and lines[1].endswith("…")


def test_durations_and_ages() -> None:
    assert format_duration(45) == "45s"
    assert format_duration(185) == "3m 05s"
    assert format_duration(7440) == "2h 04m"
    assert format_duration(3 * 86400 + 7200) == "3d 02h"
    assert format_age(NOW - timedelta(seconds=12), NOW) == "12s ago"
    assert format_age(NOW - timedelta(hours=3, minutes=5), NOW) == "3h ago"
    assert format_age(None) == "-"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("3d", 259200),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("2H", 7200),
        (" 1d 2h ", 93600),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-2h", "2h-", "two hours"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_moment() -> None:
    assert parse_moment("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_moment("now", NOW) == NOW
    assert parse_moment("2024-04-30", NOW) == datetime(2024, 4, 30, tzinfo=timezone.utc)
    assert parse_moment("2024-04-30T10:00Z", NOW) == datetime(2024, 4, 30, 10, tzinfo=timezone.utc)
    assert parse_moment("2024-04-30T12:00+02:00", NOW) == datetime(
        2024, 4, 30, 10, tzinfo=timezone.utc
    )
    assert parse_moment("2024-04-30 10:00", NOW).tzinfo is timezone.utc
    with pytest.raises(ValueError, match="neither an ISO time"):
        parse_moment("yesterday", NOW)


def test_format_seconds_keeps_short_durations_exact() -> None:
    assert format_seconds(None) == "-"
    assert format_seconds(0.1) == "0.10s"
    assert format_seconds(0.0004) == "0.00s"
    assert format_seconds(4.56) == "4.6s"
    assert format_seconds(45.3) == "45.3s"
    assert format_seconds(185) == "3m 05s"
    assert format_seconds(-3) == "0.00s"


def test_wrap_items_breaks_between_items() -> None:
    items = ["queued 4", "started 3", "succeeded 2", "failed 0", "lost 0"]
    assert wrap_items(items, 80) == ["queued 4, started 3, succeeded 2, failed 0, lost 0"]
    assert wrap_items(items, 33) == ["queued 4, started 3, succeeded 2,", "failed 0, lost 0"]
    assert wrap_items(items, 32) == ["queued 4, started 3,", "succeeded 2, failed 0, lost 0"]
    assert wrap_items(["a" * 10, "b"], 5, "; ") == ["aaaaaaaaaa;", "b"]  # an item stays whole
    assert wrap_items([], 10) == [""]


def test_render_fields_wraps_wrap_values_under_their_label() -> None:
    lines = render_fields(
        [("Tasks", Wrap(["queued 10", "started 9", "lost 1"])), ("Run", "r1")], width=30
    )
    assert lines == ["Tasks  queued 10, started 9,", "       lost 1", "Run    r1"]
    long = render_fields([("Why", Wrap(["x" * 50, "y"], "; "))], width=20)
    assert long == ["Why  xxxxxxxxxxxxxx…", "     y"]
    assert all(text_width(line) <= 20 for line in long)
