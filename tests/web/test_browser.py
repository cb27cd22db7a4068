"""The pages in a real headless browser (Debian's chromium, driven by Playwright), against real
``celery worker`` processes: a run appears on the runs page by itself, its progress reaches
100%, and a SIGKILLed worker's lost task shows up on the run page, all without a reload.

Skipped when /usr/bin/chromium is missing (``scripts/test.sh`` installs it); nothing is
downloaded at run time. A failing test leaves a screenshot under ``test-artifacts/``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from merlin_tracking import TaskState
from tests.support.processes import CLIENT_APPS, STALE_AFTER, Ledger, unique, wait_until
from tests.support.web import WebServer

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOT = REPO / "docs" / "images" / "run-page.png"
#: Set to 1 to write the README's screenshot of the run page again.
SCREENSHOT_ENV = "MERLIN_TRACKING_SCREENSHOT"
LIVE = 2_000  # ms: the pages must show a change this soon

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture
def ledger(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(redis_url, prefix, unique("q"), tmp_path)
    try:
        yield book
    finally:
        book.reap()
        while CLIENT_APPS:
            CLIENT_APPS.pop().close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    tab = context.new_page()
    yield tab
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture
def dashboard(ledger: Ledger) -> Iterator[WebServer]:
    web = WebServer(ledger.redis_url, ledger.prefix)
    yield web
    web.close()


def test_a_run_appears_completes_and_loses_a_task_live(
    ledger: Ledger, dashboard: WebServer, page: Any
) -> None:
    from celery import group

    worker, _ = ledger.start_running("solo")
    page.goto(dashboard.base + "/runs")
    assert "Runs" in page.title()
    client = ledger.client()
    work = group(client.signature("plain_app.sleeper", args=(0.05,)) for _ in range(6))
    run = ledger.launch(client, work, study="browser <b>study</b>")
    # The runs page shows the new run by itself (polling), within the live delay.
    row = page.locator(f'a[href="/runs/{run.id}"]')
    row.wait_for(timeout=LIVE + 8_000)
    assert page.locator("text=browser <b>study</b>").count() >= 1  # escaped, shown as text
    page.goto(dashboard.base + f"/runs/{run.id}")
    page.locator('.progress[data-progress="100"]').first.wait_for(timeout=30_000)
    page.locator(".badge.COMPLETED").first.wait_for(timeout=10_000)
    assert page.locator("svg.chart").count() >= 4
    if os.environ.get(SCREENSHOT_ENV) == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1000, "height": 720})
        page.screenshot(path=str(SCREENSHOT))

    # A task running on a worker that is SIGKILLed appears as lost, with why.
    doomed = ledger.launch(client, client.signature("plain_app.sleeper", args=(60,)))
    page.goto(dashboard.base + f"/runs/{doomed.id}")
    db = ledger.db
    wait_until(
        lambda: db.tasks.get_all({"run_id": doomed.id, "state": TaskState.STARTED.value}),
        30,
        "the task to start",
    )
    page.locator(".badge.RUNNING").first.wait_for(timeout=LIVE + 3_000)
    worker.signal(signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    lost = page.locator(f"text=worker {worker.node} stopped heartbeating")
    lost.first.wait_for(timeout=int((STALE_AFTER + 10) * 1000))
    assert page.locator(".badge.STALLED").count() >= 1
    assert page.locator("#lost").inner_text() == "Lost tasks (1)"
