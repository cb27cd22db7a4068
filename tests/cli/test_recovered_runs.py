"""``runs show`` says when a run was recovered (created again after its record vanished)."""

from __future__ import annotations

from datetime import datetime

import pytest

from merlin_tracking import TrackingDatabase
from tests.support.cli import Cli, ok, store_cli, widest_line


@pytest.fixture
def cli(request: pytest.FixtureRequest, store_backend: str, prefix: str) -> Cli:
    return store_cli(request, store_backend, prefix)


def test_show_marks_a_recovered_run_in_text_and_json(cli: Cli, db: TrackingDatabase) -> None:
    plain = db.runs.create("s", "/ws/plain", ["q"])
    recovered = db.runs.recover("r7", "s", "/ws/healed", ["q"])
    out = ok(cli("runs", "show", recovered.id))
    assert "Recovered" in out and "counts from then on" in out
    assert widest_line(out) <= 80
    document = cli.json("runs", "show", recovered.id)["run"]
    assert recovered.recovered_at is not None
    assert datetime.fromisoformat(document["recovered_at"]) == recovered.recovered_at
    assert "Recovered" not in ok(cli("runs", "show", plain.id))
    assert cli.json("runs", "show", plain.id)["run"]["recovered_at"] is None
