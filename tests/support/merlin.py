"""Real Merlin for the comparison test: a cached venv, the ``hello_samples`` study, Merlin's DB.

``merlin_venv()`` makes (once, then reuses) a venv with ``merlin==MERLIN_VERSION`` from the
package registry and this repository installed into it in editable mode, and nothing else:
installing the package in Merlin's environment is the whole set-up under test. It lives under
``~/.cache/merlin_tracking/merlin-<version>-venv`` (``$XDG_CACHE_HOME`` is honoured), is rebuilt
when its check fails, and the test is skipped when pip cannot reach the registry.

``HelloSamples`` runs Merlin's ``hello_samples`` example end to end the way a user does
(``merlin example``, ``merlin run``, ``merlin run-workers``, ``merlin stop-workers``) in a
temporary folder: its own ``app.yaml`` (broker and results backend: the given Redis), its own
``HOME`` (the real ``~/.merlin`` is never read or written) and its own queue, so that Merlin's
machine-wide "queue already served" guard cannot refuse the launch. The workers are detached by
Merlin; they stay in the process group of the ``merlin run-workers`` call started here, carry
an environment tag, and are killed by that group when the study ends, however it ends.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

MERLIN_VERSION = "2.0.0b4"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The example's sample generator imports the PyPI package ``names``.
EXTRA_PACKAGES = ("names",)
TAG_VARIABLE = "MERLIN_TRACKING_TEST_TAG"
PIP_TIMEOUT = 600.0
CLI_TIMEOUT = 120.0

# pip output that means "the registry cannot be reached" (skip), not "the install is broken" (fail).
_OFFLINE = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|Connection refused|ConnectTimeout|"
    r"ReadTimeout|ProxyError|Could not fetch URL|No matching distribution found|"
    r"Could not find a version that satisfies",
)


# --------------------------------------------------------------------------- the venv
def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "merlin_tracking"


def _fingerprint() -> dict[str, str]:
    """What the cached venv must have been made from: Merlin's version, this Python, and the
    repository (its path and its packaging, whose entry points the editable install copied)."""
    pyproject = (REPO_ROOT / "pyproject.toml").read_bytes()
    return {
        "merlin": MERLIN_VERSION,
        "extra": " ".join(EXTRA_PACKAGES),
        "python": ".".join(map(str, sys.version_info[:3])),
        "repo": str(REPO_ROOT),
        "pyproject": hashlib.sha256(pyproject).hexdigest(),
    }


_CHECK = """
import importlib.metadata as md, importlib.util, json, sys
import merlin_tracking
eps = [ep.value for ep in md.entry_points(group="celery.commands") if ep.name == "tracking"]
print(json.dumps({
    "merlin": md.version("merlin"),
    "names": importlib.util.find_spec("names") is not None,
    "merlin_tracking": merlin_tracking.__file__,
    "celery_command": eps,
}))
"""


def _venv_problem(venv: Path) -> str | None:
    """Why ``venv`` cannot be used as it is (None: it can)."""
    python = venv / "bin" / "python"
    for tool in ("python", "merlin", "celery"):
        if not (venv / "bin" / tool).exists():
            return f"bin/{tool} is missing"
    try:
        out = subprocess.run(
            [str(python), "-c", _CHECK],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_clean_environ(), "HOME": str(venv)},
            cwd=str(venv),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"its python does not run ({exc})"
    if out.returncode != 0:
        return f"the import check failed: {out.stderr.strip()[-500:]}"
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if found["merlin"] != MERLIN_VERSION:
        return f"it has merlin {found['merlin']}"
    if not found["names"]:
        return "the example's `names` package is missing"
    if not Path(found["merlin_tracking"]).resolve().is_relative_to(REPO_ROOT):
        return f"its merlin_tracking is {found['merlin_tracking']}, not this repository's"
    if found["celery_command"] != ["merlin_tracking.celery_command:tracking"]:
        return f"its celery.commands entry point is {found['celery_command']}"
    return None


def _pip(venv: Path, *args: str, log: Path) -> None:
    """``pip install ARGS`` in ``venv``; skip the test when the registry cannot be reached."""
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    try:
        out = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
            env=_clean_environ(),
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip install {' '.join(args)} took over {PIP_TIMEOUT:g} s (registry slow?)")
    with log.open("a") as handle:
        handle.write(f"$ pip install {' '.join(args)}\n{out.stdout}{out.stderr}\n")
    if out.returncode != 0:
        text = out.stdout + out.stderr
        tail = text.strip().splitlines()[-1] if text.strip() else ""
        if _OFFLINE.search(text):
            pytest.skip(
                f"cannot install {' '.join(args)} from the package registry (is it reachable?): "
                f"{tail} (full log: {log})"
            )
        pytest.fail(f"pip install {' '.join(args)} failed: {tail} (full log: {log})")


def merlin_venv() -> Path:
    """The venv with Merlin and this repository (editable), made or repaired on first use."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"merlin-{MERLIN_VERSION}-venv"
    marker = venv / ".merlin_tracking-venv.json"
    want = _fingerprint()
    with (root / f"merlin-{MERLIN_VERSION}-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test sessions build it once
        try:
            have = json.loads(marker.read_text())
        except (OSError, ValueError):
            have = None
        if have is not None and have.get("merlin") == MERLIN_VERSION:
            if have == want and _venv_problem(venv) is None:
                return venv
            if have.get("python") == want["python"] and (venv / "bin" / "python").exists():
                # The same Merlin, another checkout or packaging: re-point the editable install.
                _pip(venv, "-e", str(REPO_ROOT), log=root / f"merlin-{MERLIN_VERSION}-pip.log")
                if _venv_problem(venv) is None:
                    marker.write_text(json.dumps(want))
                    return venv
        shutil.rmtree(venv, ignore_errors=True)
        log = root / f"merlin-{MERLIN_VERSION}-pip.log"
        log.write_text("")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        _pip(venv, f"merlin=={MERLIN_VERSION}", *EXTRA_PACKAGES, log=log)
        _pip(venv, "-e", str(REPO_ROOT), log=log)
        problem = _venv_problem(venv)
        if problem is not None:
            pytest.fail(f"the Merlin venv {venv} is unusable right after it was made: {problem}")
        marker.write_text(json.dumps(want))
        return venv


def _clean_environ() -> dict[str, str]:
    """The test's environment without what would steer Merlin or tracking from outside."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MERLIN_TRACKING", "CELERY_", "PYTHON", "PIP_REQUIRE"))
        and name not in ("VIRTUAL_ENV", "C_FORCE_ROOT")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- Merlin's records
@dataclass
class MerlinEntity:
    """One record as ``merlin database get`` prints it: ``kind`` (``Run``, ``Study``,
    ``Logical Worker``, ``Physical Worker``), its id, its ``Key: value`` fields (values read
    as Python literals where they are ones) and its nested lists (``Runs:``, ``Physical
    Workers:``, ``Study:``) as lists of dicts."""

    kind: str
    id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


_ENTITY_HEAD = re.compile(r"^(Study|Run|Logical Worker|Physical Worker) with ID (\S+)$")


def _value(text: str) -> Any:
    text = text.strip()
    for enum in ("WorkerStatus.", "RunStatus."):
        if text.startswith(enum):
            return text[len(enum) :]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_database_output(text: str) -> list[MerlinEntity]:
    """The records in the output of ``merlin database get ...``."""
    entities: list[MerlinEntity] = []
    current: MerlinEntity | None = None
    nested: list[dict[str, Any]] | None = None
    for line in text.splitlines():
        head = _ENTITY_HEAD.match(line)
        if head:
            current = MerlinEntity(head.group(1), head.group(2))
            entities.append(current)
            nested = None
            continue
        if current is None or not line.strip() or set(line.strip()) == {"-"}:
            continue
        if line.startswith("  - "):  # a new item of the list opened by the last "Key:" line
            if nested is not None:
                key, _, value = line[4:].partition(": ")
                nested.append({key: _value(value)})
        elif line.startswith("    ") and nested:  # more of the current item
            key, _, value = line.strip().partition(": ")
            nested[-1][key] = _value(value)
        elif line.startswith("  "):  # "  No runs found."
            continue
        else:
            key, _, value = line.partition(":")
            if value.strip():
                current.fields[key] = _value(value)
                nested = None
            else:
                nested = current.fields[key] = []
    return entities


@dataclass
class MerlinRecords:
    """Merlin's own database, as ``merlin database get everything`` printed it."""

    entities: list[MerlinEntity]

    def of(self, kind: str) -> list[MerlinEntity]:
        return [entity for entity in self.entities if entity.kind == kind]

    def by_id(self, kind: str, entity_id: str) -> MerlinEntity:
        found = [entity for entity in self.of(kind) if entity.id == entity_id]
        assert len(found) == 1, f"{kind} {entity_id}: {len(found)} records in Merlin's database"
        return found[0]

    def run(self, workspace: str) -> MerlinEntity:
        found = [run for run in self.of("Run") if run["Workspace"] == workspace]
        assert len(found) == 1, f"{len(found)} Merlin runs for {workspace}: {self.of('Run')}"
        return found[0]


# --------------------------------------------------------------------------- the worker log
_LOG_LINE = re.compile(
    r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d{3})?): \w+(?:/[\w-]+)?\] "
    r"Task (?P<name>\S+?)\[(?P<id>.+?)\] (?P<what>received|succeeded|retry|raised)"
)


@dataclass(frozen=True)
class LoggedTask:
    name: str
    id: str
    at: datetime  # local time of the log line, made aware


@dataclass
class WorkerLog:
    """What Celery's worker log (INFO) says about tasks: ``Task <name>[<id>] received`` etc."""

    events: dict[str, list[LoggedTask]]

    @classmethod
    def read(cls, path: Path) -> WorkerLog:
        events: dict[str, list[LoggedTask]] = {}
        for line in path.read_text(errors="replace").splitlines():
            found = _LOG_LINE.match(line)
            if found is None:
                continue
            stamp = found["at"]
            fmt = "%Y-%m-%d %H:%M:%S,%f" if "," in stamp else "%Y-%m-%d %H:%M:%S"
            at = datetime.strptime(stamp, fmt).astimezone()  # the workers' local time
            events.setdefault(found["what"], []).append(LoggedTask(found["name"], found["id"], at))
        return cls(events)

    def count(self, what: str) -> int:
        return len(self.events.get(what, []))

    def names(self, what: str) -> Counter[str]:
        return Counter(task.name for task in self.events.get(what, []))

    def tasks(self, what: str) -> dict[str, str]:
        """Task id -> task name, of the tasks logged as ``what``."""
        return {task.id: task.name for task in self.events.get(what, [])}

    def last(self, what: str, name: str) -> LoggedTask:
        found = [task for task in self.events.get(what, []) if task.name == name]
        assert found, f"no 'Task {name}[...] {what}' line in the worker log"
        return found[-1]


# --------------------------------------------------------------------------- the study
class HelloSamples:
    """Merlin's ``hello_samples`` example, run in ``root`` against the Redis at ``redis_url``.

    ``worker_env``: what the workers (and every ``merlin`` command) get on top of the clean
    environment (the test's, less any ``MERLIN_TRACKING_*``). ``overlap``: set the spec's
    ``merlin.resources.overlap`` (Merlin then stamps each launch's worker name). Use it as a
    context manager: on exit every process Merlin started here is gone.
    """

    def __init__(
        self,
        venv: Path,
        redis_url: str,
        root: Path,
        worker_env: Mapping[str, str] | None = None,
        overlap: bool = False,
    ) -> None:
        self.venv = venv
        self.redis_url = redis_url
        self.root = root
        self.home = root / "home"
        self.study_dir = root / "hello"
        self.spec = self.study_dir / "hello_samples.yaml"
        self.worker_log = root / "workers.log"
        self.tag = f"mt-merlin-{uuid.uuid4().hex[:12]}"
        #: The steps' task_queue; Merlin's queue is ``[merlin]_<this>``.
        self.task_queue = f"mt-hello-{uuid.uuid4().hex[:8]}"
        self.queue = f"[merlin]_{self.task_queue}"
        self.workspace: str | None = None
        self._worker_env = dict(worker_env or {})
        self.overlap = overlap
        self.last_stderr = ""
        self._group: int | None = None
        self._logs: list[Path] = []

    def __enter__(self) -> HelloSamples:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # ---------------------------------------------------------------- environment
    def env(self) -> dict[str, str]:
        env = _clean_environ()
        env.update(
            HOME=str(self.home),
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            **{TAG_VARIABLE: self.tag},
        )
        env.pop("XDG_DATA_HOME", None)  # tracking's SQLite fallback, if any, stays in HOME
        if os.geteuid() == 0:  # Celery refuses pickle-accepting workers as root otherwise
            env["C_FORCE_ROOT"] = "1"
        env.update(self._worker_env)
        return env

    def merlin(self, *args: str, cwd: Path | None = None) -> str:
        """Run ``merlin ARGS`` in the study folder and return its stdout; fail the test if it
        exits non-zero. Each call's output (stderr holds Merlin's log) goes to a file."""
        log = self.root / f"merlin-{len(self._logs):02d}-{args[0]}.log"
        self._logs.append(log)
        out = subprocess.run(
            [str(self.venv / "bin" / "merlin"), *args],
            cwd=str(cwd or self.study_dir),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        log.write_text(f"$ merlin {' '.join(args)}\n{out.stdout}\n--- stderr\n{out.stderr}")
        if out.returncode != 0:
            pytest.fail(f"merlin {' '.join(args)} exited with {out.returncode}:\n{self.logs()}")
        self.last_stderr = out.stderr
        return out.stdout

    def logs(self, limit: int = 3000) -> str:
        """The tail of every log of this study, for failure messages."""
        parts = []
        for path in [*self._logs, self.worker_log]:
            with contextlib.suppress(OSError):
                parts.append(f"\n--- {path.name}\n{path.read_text(errors='replace')[-limit:]}")
        return "".join(parts)

    # ---------------------------------------------------------------- the steps
    def prepare(self) -> None:
        """``merlin example hello_samples``, an ``app.yaml`` naming the Redis, a queue of its
        own (and ``overlap`` if asked)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.merlin("example", "hello_samples", cwd=self.root)
        assert self.spec.exists(), f"merlin example made no {self.spec}:\n{self.logs()}"
        (self.study_dir / "app.yaml").write_text(
            "broker:\n"
            "  name: redis\n"
            f"  url: {self.redis_url}\n"
            "results_backend:\n"
            "  name: redis\n"
            f"  url: {self.redis_url}\n"
            f"  encryption_key: {self.home / '.merlin' / 'encrypt_data_key'}\n"
        )
        rewrite = (
            "import sys, yaml\n"
            "spec = yaml.safe_load(open(sys.argv[1]))\n"
            "for step in spec['study']:\n"
            "    step['run']['task_queue'] = sys.argv[2]\n"
            "if sys.argv[3] == 'overlap':\n"
            "    spec['merlin'].setdefault('resources', {})['overlap'] = True\n"
            "yaml.safe_dump(spec, open(sys.argv[1], 'w'), sort_keys=False)\n"
        )
        overlap = "overlap" if self.overlap else "-"
        subprocess.run(
            [
                str(self.venv / "bin" / "python"),
                "-c",
                rewrite,
                str(self.spec),
                self.task_queue,
                overlap,
            ],
            check=True,
            env=self.env(),
            timeout=60,
        )

    def run(self) -> str:
        """``merlin run``: the study is queued; returns its workspace."""
        out = self.merlin("run", self.spec.name)
        found = re.search(r"Study workspace is '(.+?)'", out + self.last_stderr)
        if found is None:
            pytest.fail(f"merlin run named no workspace:\n{self.logs()}")
        self.workspace = found.group(1)
        return self.workspace

    def start_workers(self) -> None:
        """``merlin run-workers``: Merlin launches its workers detached and returns. They stay
        in this call's process group (a new one), which ``kill`` ends."""
        log = self.worker_log.open("ab")
        try:
            proc = subprocess.Popen(
                [str(self.venv / "bin" / "merlin"), "run-workers", self.spec.name],
                cwd=str(self.study_dir),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self._group = proc.pid
        try:
            rc = proc.wait(CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"merlin run-workers did not return:\n{self.logs()}")
        if rc != 0:
            pytest.fail(f"merlin run-workers exited with {rc}:\n{self.logs()}")

    def run_status(self) -> str | None:
        """Merlin's status of this run, read from its own hashes (``run:name`` -> ``run:<id>``):
        cheap enough to poll."""
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            run_id = client.hget("run:name", self.workspace or "")
            status = client.hget(f"run:{run_id!s}", "run_status") if run_id else None
        finally:
            client.close()
        return str(status).strip('"') if status else None

    def database(self) -> MerlinRecords:
        """Merlin's database, read with ``merlin database get everything``."""
        return MerlinRecords(parse_database_output(self.merlin("database", "get", "everything")))

    def stop_workers(self, timeout: float = 60.0) -> None:
        """``merlin stop-workers``, then wait until every worker process has exited."""
        self.merlin("stop-workers", "--queues", self.task_queue)  # Merlin adds the tag
        deadline = time.monotonic() + timeout
        while self.processes():
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Merlin's workers {self.processes()} still run {timeout:g} s after "
                    f"merlin stop-workers:\n{self.logs()}"
                )
            time.sleep(0.1)

    # ---------------------------------------------------------------- processes
    def processes(self) -> list[int]:
        """Live processes of the workers' process group that carry this study's tag (the
        tag guards against a recycled group id)."""
        if self._group is None:
            return []
        found = []
        marker = f"{TAG_VARIABLE}={self.tag}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
                if int(pgrp) != self._group or state == "Z":
                    continue
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
        return found

    def kill(self, timeout: float = 10.0) -> None:
        """End every process of the workers' group: SIGTERM, then SIGKILL."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not self.processes():
                return
            assert self._group is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._group, signum)
            deadline = time.monotonic() + timeout
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.1)
