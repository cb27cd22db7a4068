"""What a newcomer sees first: which store is read, an empty ledger, ``info`` on each store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from merlin_tracking import TrackingDatabase
from merlin_tracking.resolvers import PLAIN_WORK_UNTRACKED
from tests.support.cli import Cli, make_run, ok, store_cli, widest_line

NOTICE = "no store named, reading the default ledger"


@pytest.fixture
def defaults(tmp_path: Path) -> tuple[Cli, dict[str, str], str]:
    """A CLI given no store at all, its data home in ``tmp_path``, and the default URL."""
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    return Cli("", ""), env, f"sqlite:///{tmp_path / 'data' / 'merlin_tracking' / 'tracking.db'}"


def test_the_default_store_is_named_on_stderr(defaults: tuple[Cli, dict[str, str], str]) -> None:
    cli, env, url = defaults
    result = cli("runs", "list", store=False, env=env)
    assert result.exit_code == 0, result.output
    assert f"{NOTICE} {url} (prefix merlin_tracking, a file nothing has written yet)" in (
        result.stderr
    )
    for setting in ("--url URL", "MERLIN_TRACKING_URL", "tracking_url"):
        assert setting in result.stderr
    assert result.stdout.startswith(f"No runs in {url} (prefix merlin_tracking).")

    again = cli("info", "--json", store=False, env=env)  # the file exists now
    assert again.exit_code == 0 and f"{NOTICE} {url} (prefix merlin_tracking);" in again.stderr


def test_a_named_store_gets_no_notice(
    defaults: tuple[Cli, dict[str, str], str], tmp_path: Path
) -> None:
    cli, env, url = defaults
    (tmp_path / "data" / "merlin_tracking").mkdir(parents=True)
    named = [
        {"MERLIN_TRACKING_URL": url},
        {"MERLIN_TRACKING_DB": str(tmp_path / "chosen.db")},
    ]
    for extra in named:
        result = cli("runs", "list", store=False, env=env | extra)
        assert result.exit_code == 0 and result.stderr == "", (extra, result.stderr)
    result = cli("--url", url, "runs", "list", store=False, env=env)
    assert result.exit_code == 0 and result.stderr == ""


def test_runs_list_on_an_empty_ledger_says_where_it_looked(
    request: pytest.FixtureRequest, store_backend: str, db: TrackingDatabase, prefix: str
) -> None:
    cli = store_cli(request, store_backend, prefix)
    lines = ok(cli("runs", "list")).splitlines()
    assert lines[0] == f"No runs in {db.url} (prefix {prefix})."
    assert PLAIN_WORK_UNTRACKED in lines[1] and 'tracking_run_resolver = "workflow"' in lines[1]
    # With filters, nothing matching says so, as before.
    make_run(db, "sweep", "/ws/a")
    assert ok(cli("runs", "list", "--status", "failed")) == "No runs match.\n"


def test_runs_list_on_an_empty_ledger_masks_the_password(redis_url: str, prefix: str) -> None:
    result = Cli(redis_url.replace("redis://", "redis://:s3cret-pw@"), prefix)("runs", "list")
    assert result.exit_code in (0, 3), result.output  # see test_info_masks_the_password
    assert "s3cret-pw" not in result.output


def test_info_shows_the_memory_of_each_store(
    request: pytest.FixtureRequest, store_backend: str, db: TrackingDatabase, prefix: str
) -> None:
    make_run(db, "sweep", "/ws/a", queued=2)
    out = ok(store_cli(request, store_backend, prefix)("info"))
    server = next(line for line in out.splitlines() if line.startswith("Server"))
    assert "?" not in server
    if store_backend == "redis":
        assert re.search(r"redis \d+\.\d+\.\d+, \d+(\.\d+)?[BKMG] used$", server), server
    else:
        assert re.search(r"sqlite \d+\.\d+\.\d+, \d+(\.\d\d)?[BKMG] on disk$", server), server


def test_info_shows_a_long_ledger_path_whole_within_the_width(tmp_path: Path, prefix: str) -> None:
    folder = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    folder.mkdir(parents=True)
    url = f"sqlite:///{folder / 'tracking.db'}"
    out = ok(Cli(url, prefix)("info"))
    assert widest_line(out) <= 80
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Store"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Prefix"))
    assert end - start > 1  # it took more than one line
    shown = "".join(line.strip() for line in lines[start:end]).removeprefix("Store").strip()
    assert shown == f"sqlite {url}"
