"""The worker's start-up log says where its ledger is and which work makes runs."""

from __future__ import annotations

import pytest

from merlin_tracking.resolvers import PLAIN_WORK_UNTRACKED
from tests.support.processes import Ledger, wait_until

HINT = 'tracking_run_resolver = "workflow"'


def startup_line(ledger: Ledger, **env: str) -> str:
    worker, _ = ledger.start_running(env=env)

    def logged() -> str | None:
        lines = [line for line in worker.stderr().splitlines() if "merlin_tracking: ledger" in line]
        return lines[0] if lines else None

    return wait_until(logged, 30, "the start-up line in the worker's log", on_timeout=worker.logs)


@pytest.mark.parametrize("resolver", ["auto", "headers"])
def test_a_resolver_leaving_plain_work_untracked_says_how_to_track_it(
    ledger: Ledger, resolver: str
) -> None:
    line = startup_line(ledger, MERLIN_TRACKING_RUN_RESOLVER=resolver)
    assert f"ledger {ledger.redis_url} (prefix {ledger.prefix})" in line
    assert f"run resolver {resolver!r}" in line
    assert PLAIN_WORK_UNTRACKED in line and HINT in line


def test_the_workflow_resolver_needs_no_hint(ledger: Ledger) -> None:
    line = startup_line(ledger, MERLIN_TRACKING_RUN_RESOLVER="workflow")
    assert "run resolver 'workflow': run headers, then every Celery workflow" in line
    assert HINT not in line
