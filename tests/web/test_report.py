"""``merlin-tracking report RUN -o FILE``: one self-contained HTML file of a run."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.cli import Cli
from tests.web.conftest import HOSTILE, Book
from tests.web.test_api import EXTERNAL


def test_the_report_is_one_self_contained_file(
    book: Book, url: str, prefix: str, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    result = Cli(url, prefix)("report", book.completed, "-o", str(out))
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.startswith("<!doctype html>") and html.endswith("</html>")
    assert not EXTERNAL.search(html)
    assert "<script" not in html and "<link" not in html  # nothing to load, nothing to run
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for section in ("Timeline", "Throughput", "Durations", "Worker utilisation", "Failures"):
        assert f"<h2>{section}" in html
    assert len(re.findall(r"<svg ", html)) == 4
    assert "4/4 tasks finished" in html and "sim@n1" in html


def test_the_report_lists_failures_and_lost_tasks(
    book: Book, url: str, prefix: str, tmp_path: Path
) -> None:
    cli = Cli(url, prefix)
    failed = cli("report", book.failed, "-o", "-")
    assert failed.exit_code == 0
    assert "ValueError: &lt;script&gt;alert(1)&lt;/script&gt;" in failed.stdout
    stalled = cli("report", book.stalled, "-o", "-").stdout
    assert (
        "Failures and lost tasks (1)" in stalled and "shut down with the task unfinished" in stalled
    )
    missing = cli("report", "nope", "-o", str(tmp_path / "x.html"))
    assert missing.exit_code == 1 and "nope" in missing.output
    assert not (tmp_path / "x.html").exists()
