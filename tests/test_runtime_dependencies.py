"""The declared runtime dependencies are enough, with nothing the test tools bring along.

A fresh virtualenv gets only ``[project] dependencies`` of pyproject.toml (pytest is what
brought ``packaging`` in unnoticed, which kombu's Redis transport imports). The package then
publishes a tracked launch through Celery on the Redis transport and reads the ledger. Needs
the package index once (pip's cache serves reruns); skipped when it cannot be reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[1]
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Failed to establish a new connection",
    "No matching distribution found",
    "Could not find a version that satisfies",
)

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    from celery import Celery
    import merlin_tracking

    url, prefix, queue = sys.argv[1:4]
    app = Celery("runtime_only", broker=url, backend=url)
    app.conf.update(tracking_prefix=prefix, task_default_queue=queue)

    @app.task(name="runtime_only.noop")
    def noop():
        return None

    run = merlin_tracking.launch_study(app, "runtime_only", "/ws/runtime-only", noop.s())
    print(json.dumps({
        "pytest": importlib.util.find_spec("pytest") is not None,
        "run": run.id,
        "queued": run.tasks_queued,
        "transport": type(app.connection_for_write().transport).__module__,
    }))
    """
)


def runtime_dependencies() -> list[str]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    with open(REPO / "pyproject.toml", "rb") as handle:
        return list(tomllib.load(handle)["project"]["dependencies"])


def test_the_redis_transport_works_with_the_runtime_dependencies_alone(
    tmp_path: Path, redis_url: str, prefix: str, raw_redis: redis.Redis
) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--retries", "0", "--timeout", "20"]
    install = subprocess.run(
        [*pip, *runtime_dependencies()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if install.returncode != 0:
        output = install.stdout + install.stderr
        if any(sign in output for sign in OFFLINE_SIGNS):
            pytest.skip(f"the package index cannot be reached: {output.strip()[-300:]}")
        pytest.fail(f"pip could not install the runtime dependencies:\n{output}")

    queue = f"q_{prefix}"
    clean_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),  # the package from source; its dependencies from the venv
    }
    try:
        result = subprocess.run(
            [python, "-c", SCRIPT, redis_url, prefix, queue],
            cwd=tmp_path,
            env=clean_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        raw_redis.delete(queue)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "pytest": False,
        "run": report["run"],
        "queued": 1,
        "transport": "kombu.transport.redis",
    }
