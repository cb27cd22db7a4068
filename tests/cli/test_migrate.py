"""``merlin-tracking migrate``: an older release's ledger brought to this format in place, once."""

from __future__ import annotations

import pytest
import redis

from merlin_tracking import Run, TaskState, TrackingDatabase
from tests.support.cli import Cli, ok, store_cli
from tests.support.wave1 import write_wave_1_run


@pytest.fixture
def cli(request: pytest.FixtureRequest, store_backend: str, prefix: str) -> Cli:
    return store_cli(request, store_backend, prefix)


def test_a_current_ledger_has_nothing_to_migrate(cli: Cli, db: TrackingDatabase) -> None:
    db.runs.create("s", "/ws/1", ["q"])
    assert "1 run checked: 0 runs upgraded, 0 task ledgers indexed; nothing to do" in ok(
        cli("migrate")
    )
    assert cli.json("migrate") == {"runs": 1, "runs_upgraded": 0, "ledgers_indexed": 0}


def test_a_wave_1_redis_ledger_is_migrated_in_place_once(
    redis_url: str, prefix: str, raw_redis: redis.Redis
) -> None:
    """Written the way wave 1 wrote it: record version 1, task states without the row index,
    settling runs in a plain set. Afterwards it reads as it did, and a second run does nothing."""
    db = TrackingDatabase.from_url(redis_url, prefix=prefix)
    old = db.runs.create("s", "/ws/old", ["q"])
    current = db.runs.create("s", "/ws/current", ["q"])
    key = write_wave_1_run(raw_redis, prefix, old.id)
    cli = Cli(redis_url, prefix)
    assert cli.json("migrate") == {"runs": 2, "runs_upgraded": 1, "ledgers_indexed": 1}
    assert raw_redis.hget(key, "v") == str(Run.SCHEMA_VERSION).encode()
    assert raw_redis.exists(key + ":rows")
    assert not raw_redis.exists("{" + prefix + "}:run:settling")
    assert "2 runs checked: 0 runs upgraded, 0 task ledgers indexed; nothing to do" in ok(
        cli("migrate")
    )
    fresh = TrackingDatabase.from_url(redis_url, prefix=prefix)
    tasks = {task.id: task.state for task in fresh.tasks.get_all({"run_id": old.id})}
    assert tasks == {
        "done": TaskState.SUCCEEDED,
        "busy": TaskState.STARTED,
        "waiting": TaskState.QUEUED,
    }
    assert [t.id for t in fresh.tasks.get_all({"state": "started"})] == ["busy"]
    run = fresh.runs.get(old.id)
    assert (run.status.value, run.tasks_queued, run.tasks_started) == ("RUNNING", 3, 2)
    assert fresh.runs.get(current.id) == db.runs.get(current.id)
