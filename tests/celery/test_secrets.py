"""Credentials never reach the ledger or its readers: a worker whose broker URL holds a
password (on its command line, or in its environment) is recorded with the password masked, and
neither the CLI nor the stored record shows it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from merlin_tracking.records import PhysicalWorker
from tests.support.cli import Cli
from tests.support.processes import Ledger
from tests.support.redis_server import RedisServer, free_port

PASSWORD = "s3cr3t-Hunter2"


@pytest.fixture
def guarded_broker() -> Iterator[str]:
    """A private redis-server that wants a password: the URL with it, as users write it."""
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    server = RedisServer(["--requirepass", PASSWORD], port=port, url=url).start()
    try:
        yield url
    finally:
        server.close()


def _shown_nowhere(ledger: Ledger, record: PhysicalWorker) -> None:
    cli = Cli(ledger.redis_url, ledger.prefix)
    listed = cli.json("workers", "list")
    assert PASSWORD not in json.dumps(listed)
    shown = cli("workers", "show", record.name)
    assert shown.exit_code == 0 and PASSWORD not in shown.output
    assert PASSWORD not in json.dumps(ledger.db.physical_workers.get(record.id).to_fields())


def test_a_password_on_the_command_line_is_masked(ledger: Ledger, guarded_broker: str) -> None:
    worker, record = ledger.start_running(extra_args=["-b", guarded_broker])
    assert record.launch_cmd is not None and "-b redis://:***@127.0.0.1" in record.launch_cmd
    assert PASSWORD not in record.launch_cmd
    _shown_nowhere(ledger, record)
    assert PASSWORD not in worker.logs(limit=1_000_000)


def test_a_password_in_the_environment_is_masked(ledger: Ledger, guarded_broker: str) -> None:
    worker, record = ledger.start_running(broker=guarded_broker)  # PLAIN_APP_BROKER_URL
    assert PASSWORD not in (record.launch_cmd or "") + json.dumps(record.args)
    _shown_nowhere(ledger, record)
    assert PASSWORD not in worker.logs(limit=1_000_000)


def test_records_mask_credentials_in_command_lines_and_settings() -> None:
    record = PhysicalWorker(
        id="p1",
        created_at=datetime.now(timezone.utc),
        name="w@h",
        launch_cmd=f"celery -b amqp://guest:{PASSWORD}@mq// -A app worker --redis-password x",
        args={"broker": f"rediss://alice:{PASSWORD}@h/0", "nested": [f"--token={PASSWORD}"]},
    )
    assert record.launch_cmd == "celery -b amqp://guest:***@mq// -A app worker --redis-password ***"
    assert record.args == {"broker": "rediss://alice:***@h/0", "nested": ["--token=***"]}
