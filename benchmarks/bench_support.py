"""What the benchmarks share: a throw-away redis-server and the facts about the machine.

The benchmarks never touch a Redis they did not start (and never port 6379).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis(binary: str) -> Iterator[str]:
    """Start a throw-away redis-server on a free port; yield its URL; stop it afterwards."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="mt-bench-redis-")
    command = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", workdir, "--logfile", os.path.join(workdir, "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_server(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_server(url: str, proc: subprocess.Popen[bytes]) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start at {url}") from None
                time.sleep(0.05)
    finally:
        client.close()


REPO_ROOT = Path(__file__).resolve().parent.parent


def machine_facts() -> dict[str, str]:
    """CPU, OS, Python, load and code version for a report's "Machine" table."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "CPU": cpu or platform.processor() or "unknown",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
    }


def load_average() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def git_state() -> str:
    """The commit measured, and whether merlin_tracking/ had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "merlin_tracking")
    return f"commit {commit}" + (" + uncommitted changes in merlin_tracking/" if dirty else "")


def merge_section(
    path: Path, section: str, start_marker: str, end_marker: str, *, first: bool
) -> None:
    """Replace one script's marked section of a shared report, keeping the rest as it is;
    a missing section goes first (``first``) or last."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(section + "\n", encoding="utf-8")
        return
    text = path.read_text(encoding="utf-8")
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_marker) :]
    elif first:
        text = section + "\n\n" + text.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
