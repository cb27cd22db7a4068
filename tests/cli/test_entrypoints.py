"""Smoke tests of both installed entry points: ``merlin-tracking`` and ``celery -A APP tracking``.

They need the package installed (``pip install -e .``) so the console script and the
``celery.commands`` entry point exist.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from merlin_tracking import TrackingDatabase
from tests.support.cli import make_run

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MERLIN_TRACKING_", "CLI_APP_"))
    }
    env.update(extra_env, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _script(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip(f"{name} is not installed: run pip install -e .")
    return found


def test_console_script(db: TrackingDatabase, redis_url: str, prefix: str) -> None:
    run = make_run(db, "sweep", "/ws/a", queued=2)
    script = _script("merlin-tracking")
    result = _run([script, "--url", redis_url, "--prefix", prefix, "info", "--json"], {})
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["counts"]["run"] == 1
    assert document["recent_runs"][0]["id"] == run.id

    listed = _run(
        [script, "runs", "list"],
        {"MERLIN_TRACKING_URL": redis_url, "MERLIN_TRACKING_PREFIX": prefix},
    )
    assert listed.returncode == 0 and run.id in listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80

    missing = _run([script, "--url", redis_url, "--prefix", prefix, "runs", "show", "nope"], {})
    assert missing.returncode == 1 and "no run matches 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr

    down = _run([script, "--url", "redis://u:pw123@127.0.0.1:1/0", "info"], {})
    assert down.returncode == 3 and "u:***@127.0.0.1:1/0" in down.stderr
    assert "pw123" not in down.stderr and "Traceback" not in down.stderr


@pytest.mark.parametrize("module", ["merlin_tracking", "merlin_tracking.cli"])
def test_python_module(redis_url: str, prefix: str, module: str) -> None:
    result = _run(
        [
            sys.executable,
            "-m",
            module,
            "--url",
            redis_url,
            "--prefix",
            prefix,
            "runs",
            "list",
            "--json",
        ],
        {},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"count": 0, "runs": []}


def test_celery_subcommand(db: TrackingDatabase, redis_url: str, prefix: str) -> None:
    run = make_run(db, "sweep", "/ws/a")
    celery = _script("celery")
    app_env = {"CLI_APP_TRACKING_URL": redis_url, "CLI_APP_TRACKING_PREFIX": prefix}
    result = _run([celery, "-A", "tests.apps.cli_app", "tracking", "info"], app_env)
    assert result.returncode == 0, result.stderr
    assert "1 study, 1 run" in result.stdout and run.id in result.stdout

    as_json = _run(
        [celery, "-A", "tests.apps.cli_app", "tracking", "runs", "list", "--json"], app_env
    )
    assert as_json.returncode == 0, as_json.stderr
    assert [r["id"] for r in json.loads(as_json.stdout)["runs"]] == [run.id]

    refused = _run(
        [celery, "-A", "tests.apps.cli_app", "tracking", "runs", "delete", run.id], app_env
    )
    assert refused.returncode == 2 and "without --yes" in refused.stderr
    assert db.runs.count() == 1

    down = _run(
        [celery, "-A", "tests.apps.cli_app", "tracking", "info"],
        {"CLI_APP_TRACKING_URL": "redis://:sekret@127.0.0.1:1/0"},
    )
    assert down.returncode == 3 and ":***@127.0.0.1:1/0" in down.stderr
    assert "sekret" not in down.stderr and "Traceback" not in down.stderr
