"""Store resolution, exit codes of every error path, and help with examples on every command."""

from __future__ import annotations

import json
from types import SimpleNamespace

import click
import pytest
from celery import Celery

from merlin_tracking import TrackingDatabase
from merlin_tracking.cli import cli as root
from tests.support.cli import Cli, fails, make_run, ok

UNREACHABLE = "redis://admin:hunter2@127.0.0.1:1/0"

# One invocation of every command that reads or writes the store.
STORE_COMMANDS = [
    ["info"],
    ["runs", "list"],
    ["runs", "show", "x"],
    ["runs", "cancel", "x", "--yes"],
    ["runs", "delete", "x", "--yes"],
    ["runs", "delete", "--all", "--yes"],
    ["studies", "list"],
    ["studies", "show", "x"],
    ["studies", "delete", "x", "--yes"],
    ["workers", "list"],
    ["workers", "show", "x"],
    ["gc", "--dry-run"],
    ["watch", "--once"],
    ["export", "x"],
]


@pytest.fixture
def cli(redis_url: str, prefix: str) -> Cli:
    return Cli(redis_url, prefix)


@pytest.mark.parametrize("args", STORE_COMMANDS, ids=lambda a: " ".join(a))
def test_unreachable_store_exits_3_with_the_password_masked(args: list[str], prefix: str) -> None:
    result = Cli(UNREACHABLE, prefix)(*args, "--json")
    stderr = fails(result, 3, "redis://admin:***@127.0.0.1:1/0", "unavailable")
    assert "hunter2" not in result.output
    assert result.stdout == ""
    assert stderr.count("\n") == 1


def test_unreachable_store_on_import(db: TrackingDatabase, prefix: str, tmp_path) -> None:
    document = tmp_path / "run.json"
    document.write_text(json.dumps(db.export_run(make_run(db, "s", "/ws").id)))
    fails(Cli(UNREACHABLE, prefix)("import", str(document)), 3, "admin:***@")


def test_bad_url_and_prefix_are_usage_errors(redis_url: str, prefix: str) -> None:
    fails(Cli("http://example.com", prefix)("info"), 2, "no store for URL scheme 'http'")
    fails(Cli("redis://u:pw@host:notaport/0", prefix)("info"), 2, "u:***@")
    fails(Cli(redis_url, "bad prefix{}")("info"), 2, "invalid key prefix")


def test_url_and_prefix_from_the_environment(
    db: TrackingDatabase, redis_url: str, prefix: str
) -> None:
    run = make_run(db, "s", "/ws")
    env = {"MERLIN_TRACKING_URL": redis_url, "MERLIN_TRACKING_PREFIX": prefix}
    cli = Cli(redis_url, prefix)
    document = cli.json("runs", "list", store=False, env=env)
    assert [r["id"] for r in document["runs"]] == [run.id]
    # Options win over the environment.
    other = cli.json("runs", "list", env=env | {"MERLIN_TRACKING_PREFIX": prefix + "_other"})
    assert other["count"] == 1
    result = cli("runs", "list", store=False, env={"MERLIN_TRACKING_URL": UNREACHABLE})
    fails(result, 3, "admin:***@")


def test_store_from_the_celery_app(db: TrackingDatabase, redis_url: str, prefix: str) -> None:
    run = make_run(db, "s", "/ws")
    app = Celery("cli_test", set_as_current=False)
    app.conf.update(tracking_url=redis_url, tracking_prefix=prefix)
    celery_obj = SimpleNamespace(app=app)  # what ``celery -A`` passes in ``ctx.obj``
    cli = Cli(redis_url, prefix)
    document = cli.json("runs", "list", store=False, obj=celery_obj)
    assert [r["id"] for r in document["runs"]] == [run.id]
    # --url wins over the app's tracking_url, and the app's prefix still applies.
    fails(cli("--url", UNREACHABLE, "info", store=False, obj=celery_obj), 3, "admin:***@")
    with_url = cli.json("--url", redis_url, "runs", "list", store=False, obj=celery_obj)
    assert with_url["count"] == 1
    # --prefix wins over the app's tracking_prefix.
    other = cli.json("--prefix", prefix + "_other", "runs", "list", store=False, obj=celery_obj)
    assert other["count"] == 0
    app.conf.tracking_prefix = "bad prefix"
    fails(cli("info", store=False, obj=celery_obj), 2, "tracking_prefix")


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


@pytest.mark.parametrize("path", _commands(root), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    out = ok(Cli("redis://unused", "p")(*path, "--help", store=False))
    assert "Examples:" in out
    assert "merlin-tracking" in out.split("Examples:")[1]
    assert max(len(line) for line in out.splitlines()) <= 80
    if path and path[-1] not in ("runs", "studies", "workers"):
        assert "--json" in out


def test_unknown_command_and_option_are_usage_errors(cli: Cli) -> None:
    fails(cli("nope"), 2, "No such command")
    fails(cli("runs", "list", "--bogus"), 2, "No such option")
    fails(cli("runs", "show"), 2, "Missing argument")


def test_version(cli: Cli) -> None:
    from merlin_tracking import __version__

    assert __version__ in ok(cli("--version", store=False))
