"""``merlin-tracking acl``: the printed rules, piped into ``redis-cli`` as docs/storage.md says,
make users that can do what the package does and no more.

On a private redis-server, the write user's real ``celery worker`` subprocess (heartbeats, the
beacon's catch-ups) and launcher track a study to the exact counts, and the CLI reads it, with
no ACL denial in the server's ``ACL LOG``. The viewer reads the same through the CLI, is refused
its writes, and sees the ledger as the last writer's catch-up left it. A user missing a single
command is refused, so the empty log above means the list is complete for the workload.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, group
from click.testing import Result

from merlin_tracking import RunStatus, StoreError, StoreRefusedError, TrackingDatabase
from merlin_tracking.signals import install
from merlin_tracking.stores.redis.acl import DEFAULT_USER, DEFAULT_VIEWER, WRITES
from merlin_tracking.urls import mask_url
from tests.support.cli import Cli, fails, ok
from tests.support.processes import (
    CLIENT_APPS,
    REPO_ROOT,
    STALE_AFTER,
    Ledger,
    exact,
    physical_by_name,
    unique,
    wait_until,
)
from tests.support.redis_server import RedisServer

PASSWORD = "acl-Pa55-word"
TASKS = 8


def acl_lines(*args: str) -> Result:
    return Cli("", "")("acl", *args, store=False)


# --------------------------------------------------------------------------- the printed rules
def test_only_the_acl_lines_go_to_stdout_and_the_notes_to_stderr() -> None:
    result = acl_lines("--prefix", "myproj")
    lines = ok(result).splitlines()
    assert len(lines) == 2 and all(
        line.startswith(f"ACL SETUSER {DEFAULT_USER} ") for line in lines
    )
    assert "~{myproj} ~{myproj}:*" in lines[0] and "+hset" in lines[0]
    notes = result.stderr.splitlines()
    assert notes and all(note.startswith("#") for note in notes)
    assert f"ACL SETUSER {DEFAULT_USER} >PASSWORD" in result.stderr
    assert f"redis://{DEFAULT_USER}:PASSWORD@HOST:6379/0" in result.stderr
    viewer = acl_lines("--prefix", "myproj", "--read-only")
    first = ok(viewer).splitlines()[0]
    assert first.startswith(f"ACL SETUSER {DEFAULT_VIEWER} ") and "%R~{myproj}:*" in first
    assert "+hset" not in first and "catch-up" in viewer.stderr


def test_json_holds_the_same_lines() -> None:
    document = json.loads(ok(acl_lines("--prefix", "myproj", "--read-only", "--json")))
    assert document == {
        "user": DEFAULT_VIEWER,
        "prefix": "myproj",
        "read_only": True,
        "lines": ok(acl_lines("--prefix", "myproj", "--read-only")).splitlines(),
    }


def test_the_prefix_defaults_to_the_group_option_then_the_default() -> None:
    grouped = Cli("", "")("--prefix", "fromgroup", "acl", "--user", "u1", store=False)
    assert "~{fromgroup}:*" in ok(grouped) and "ACL SETUSER u1 " in grouped.stdout
    assert "~{merlin_tracking}:*" in ok(acl_lines())


def test_a_bad_prefix_or_user_is_a_usage_error_saying_what_is_valid() -> None:
    fails(acl_lines("--prefix", "my*proj"), 2, "invalid key prefix 'my*proj'", "letters, digits")
    fails(acl_lines("--user", "a b"), 2, "invalid ACL user name 'a b'", "letters, digits")
    fails(acl_lines("--user", "default"), 2, "the server's own user")


def test_celery_tracking_acl_takes_the_apps_prefix() -> None:
    env = {**os.environ, "CLI_APP_TRACKING_PREFIX": "fromapp"}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.cli_app", "tracking", "acl"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ACL SETUSER {DEFAULT_USER} ") and "~{fromapp}:*" in done.stdout


# --------------------------------------------------------------------------- on a real server
@dataclass
class AclServer:
    """A private redis-server whose default user is the administrator."""

    server: RedisServer
    admin: redis.Redis

    def url(self, user: str) -> str:
        return f"redis://{user}:{PASSWORD}@127.0.0.1:{self.server.port}/0"

    def apply(self, *acl_args: str) -> None:
        """Pipe ``merlin-tracking acl ARGS`` into redis-cli, then give the user its password,
        as the notes say."""
        result = acl_lines(*acl_args)
        lines = ok(result).splitlines()
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli comes with redis-server"
        piped = subprocess.run(
            [cli, "-p", str(self.server.port)], input=result.stdout, capture_output=True, text=True
        )
        replies = piped.stdout.splitlines()
        assert replies[0] == "OK", piped
        version = tuple(int(n) for n in self.version.split(".")[:2])
        assert replies[1] == "OK" or (version < (7, 2) and "Unknown command" in replies[1])
        user = lines[0].split()[2]
        with pytest.raises(redis.AuthenticationError), redis.Redis.from_url(self.url(user)) as c:
            c.ping()  # no one may log in as the user yet
        self.admin.execute_command("ACL", "SETUSER", user, f">{PASSWORD}")

    @property
    def version(self) -> str:
        return str(self.admin.info("server")["redis_version"])

    def denials(self, user: str) -> list[dict[str, Any]]:
        """The ACL LOG's refusals of ``user``'s commands and keys (not failed logins)."""
        log = self.admin.acl_log()
        return [e for e in log if e["username"] == user and e["reason"] != "auth"]


@pytest.fixture(scope="module")
def acl_server() -> Iterator[AclServer]:
    server = RedisServer(name="mt-acl-redis-").start()
    admin = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield AclServer(server, admin)
    finally:
        admin.close()
        server.close()


@pytest.fixture(scope="module", autouse=True)
def _close_client_apps() -> Iterator[None]:
    yield
    while CLIENT_APPS:
        CLIENT_APPS.pop().close()


def tracking_as(acl_server: AclServer, user: str, prefix: str, tmp_path: Path) -> Ledger:
    """Workers and launchers whose broker is the admin's and whose ledger user is ``user``."""
    return Ledger(
        acl_server.server.url, prefix, unique("q"), tmp_path, tracking_url=acl_server.url(user)
    )


def launcher(ledger: Ledger) -> Celery:
    client = ledger.client()
    tracker = install(client)  # the one ``client`` has
    assert tracker is not None and tracker.db.url == mask_url(str(ledger.tracking_url))
    return client


@dataclass
class Tracked:
    """A study tracked end to end by the write user of ``prefix``."""

    ledger: Ledger
    run_id: str
    worker_id: str


@pytest.fixture(scope="module")
def tracked(acl_server: AclServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    """The study, tracked once for the tests below; ``w-<prefix>`` writes, ``v-<prefix>``
    views (each test that looks at the ACL LOG uses users of its own)."""
    prefix = unique("acl")
    acl_server.apply("--prefix", prefix, "--user", f"w-{prefix}")
    acl_server.apply("--prefix", prefix, "--user", f"v-{prefix}", "--read-only")
    ledger = tracking_as(acl_server, f"w-{prefix}", prefix, tmp_path_factory.mktemp("acl"))
    try:
        _, record = ledger.start_running("solo")
        client = launcher(ledger)
        tasks = [client.signature("plain_app.noop") for _ in range(TASKS - 2)]
        tasks += [client.signature("plain_app.sleeper", args=(0.01,)) for _ in range(2)]
        launched = ledger.launch(client, group(tasks))
        assert launched.tasks_queued == TASKS
        run = ledger.wait_run(launched.id, RunStatus.COMPLETED)
        assert run.counters == exact(TASKS)
        yield Tracked(ledger, launched.id, record.id)
    finally:
        ledger.reap()


def read_everything(cli: Cli, tracked: Tracked) -> dict[str, Any]:
    """The CLI's reads of the tracked study, checked, as documents."""
    runs = cli.json("runs", "list")
    assert [(r["id"], r["status"]) for r in runs["runs"]] == [(tracked.run_id, "COMPLETED")]
    workers = cli.json("workers", "list")
    assert [w["id"] for w in workers["physical_workers"]] == [tracked.worker_id]
    shown = cli.json("runs", "show", tracked.run_id)
    assert shown["run"]["counters"] == exact(TASKS)
    tasks = cli.json("runs", "tasks", tracked.run_id)
    assert tasks["count"] == TASKS
    succeeded = cli.json("runs", "tasks", tracked.run_id, "--state", "succeeded")
    assert succeeded["count"] == TASKS
    studies = cli.json("studies", "list")
    assert [s["runs"] for s in studies["studies"]] == [[tracked.run_id]]
    info = cli.json("info")
    assert info["counts"]["run"] == 1 and info["runs_by_status"]["COMPLETED"] == 1
    assert tracked.run_id in ok(cli("runs", "show", tracked.run_id))
    assert cli.json("watch", "--once")["workers"][0]["id"] == tracked.worker_id
    return {"runs": runs, "tasks": tasks, "studies": studies}  # workers heartbeat meanwhile


def test_the_write_user_tracks_a_study_and_reads_it_with_no_denial(
    acl_server: AclServer, tracked: Tracked
) -> None:
    user = f"w-{tracked.ledger.prefix}"
    read_everything(Cli(acl_server.url(user), tracked.ledger.prefix), tracked)
    assert acl_server.denials(user) == []


def test_the_viewer_reads_what_the_writer_reads_and_is_refused_its_writes(
    acl_server: AclServer, tracked: Tracked
) -> None:
    prefix = tracked.ledger.prefix
    writer, viewer = f"w-{prefix}", f"v-{prefix}"
    seen_by_writer = read_everything(Cli(acl_server.url(writer), prefix), tracked)
    viewer_cli = Cli(acl_server.url(viewer), prefix)
    assert read_everything(viewer_cli, tracked) == seen_by_writer
    assert acl_server.denials(viewer) == []  # nothing was due: its catch-ups only read

    said = fails(viewer_cli("runs", "delete", tracked.run_id, "--yes"), 3, "refused")
    assert PASSWORD not in said and f"{viewer}:***@" in said
    db = TrackingDatabase.from_url(acl_server.url(viewer), prefix=prefix)
    with pytest.raises(StoreError, match="refused the operation") as caught:
        db.runs.create("s", "/ws/viewer", ["q"])
    assert PASSWORD not in str(caught.value)
    denied = {d["object"] for d in acl_server.denials(viewer)}
    assert denied and denied <= set(WRITES)  # the server refused writes, nothing else
    assert [r.id for r in tracked.ledger.db.runs.get_all()] == [tracked.run_id]


def test_a_viewers_write_is_a_noperm_refusal(acl_server: AclServer, tracked: Tracked) -> None:
    prefix = tracked.ledger.prefix
    acl_server.apply("--prefix", prefix, "--user", f"v2-{prefix}", "--read-only")
    db = TrackingDatabase.from_url(acl_server.url(f"v2-{prefix}"), prefix=prefix)
    with pytest.raises(StoreRefusedError, match="ACL user") as caught:
        db.runs.create("s", "/ws/viewer", ["q"])
    assert caught.value.code == "NOPERM"


def test_a_user_missing_one_command_is_refused_and_logged(
    acl_server: AclServer, tracked: Tracked
) -> None:
    prefix = tracked.ledger.prefix
    user = f"almost-{prefix}"
    acl_server.apply("--prefix", prefix, "--user", user)
    acl_server.admin.execute_command("ACL", "SETUSER", user, "-hincrby")
    db = TrackingDatabase.from_url(acl_server.url(user), prefix=prefix)
    assert db.runs.get(tracked.run_id).counters == exact(TASKS)  # reads need no HINCRBY
    with pytest.raises(StoreRefusedError) as caught:
        db.runs.change_publishing(tracked.run_id, 1)  # counts a launch with HINCRBY
    assert caught.value.code == "NOPERM" and "merlin-tracking acl" in str(caught.value)
    assert [d["object"] for d in acl_server.denials(user)] == ["hincrby"]
    assert tracked.ledger.db.runs.get(tracked.run_id).publishing == 0


def test_a_viewer_sees_the_ledger_as_the_last_writers_catch_up_left_it(
    acl_server: AclServer, tmp_path: Path
) -> None:
    """No writer is left to apply what time made due: the viewer's catch-up is refused and
    skipped, its reads go on; the first read by a writer applies it."""
    prefix = unique("acl-stale")
    writer, viewer = f"w-{prefix}", f"v-{prefix}"
    acl_server.apply("--prefix", prefix, "--user", writer)
    acl_server.apply("--prefix", prefix, "--user", viewer, "--read-only")
    ledger = tracking_as(acl_server, writer, prefix, tmp_path)
    try:
        worker, record = ledger.start_running("solo")
        client = launcher(ledger)
        run = ledger.launch(client, client.signature("plain_app.sleeper", args=(60,)))
        wait_until(lambda: ledger.db.runs.get(run.id).tasks_started == 1, 30, "the task started")
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its beacon, at once
        worker.wait()

        viewer_cli = Cli(acl_server.url(viewer), prefix)

        def stalled_for_the_viewer() -> bool:
            (seen,) = viewer_cli.json("workers", "list", "--physical")["physical_workers"]
            return bool(seen["status"] == "STALLED")

        wait_until(stalled_for_the_viewer, 4 * STALE_AFTER, "the worker read STALLED")
        stored = json.loads(acl_server.admin.hget(f"{{{prefix}}}:pw:{record.id}", "status"))
        assert stored == "RUNNING"  # liveness is read at once; the catch-up did not happen
        shown = viewer_cli.json("runs", "show", run.id)["run"]
        assert (shown["status"], shown["tasks_lost"]) == ("RUNNING", 0)
        assert {d["context"] for d in acl_server.denials(viewer)} == {"lua"}  # refused

        writer_cli = Cli(acl_server.url(writer), prefix)
        after = writer_cli.json("runs", "show", run.id)["run"]
        assert (after["status"], after["tasks_lost"]) == ("STALLED", 1)
        assert viewer_cli.json("runs", "show", run.id)["run"]["status"] == "STALLED"
        assert physical_by_name(ledger.db, worker.node)[0].status.value == "STALLED"
        assert acl_server.denials(writer) == []
    finally:
        ledger.reap()
