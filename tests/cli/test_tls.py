"""The command line on a TLS redis-server: a rediss:// URL works, and a certificate that cannot
be verified ends the command with exit code 3 and one line saying what to set, the password
masked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from merlin_tracking import TrackingDatabase
from tests.support.cli import Cli, fails, make_run, ok
from tests.support.tls import PASSWORD, TlsLab, tls_lab, tls_url


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    with tls_lab(tmp_path_factory.mktemp("tls-cli")) as made:
        yield made


@pytest.fixture(scope="module")
def guarded_port(lab: TlsLab) -> int:
    return lab.serve(password=PASSWORD)


def test_runs_list_over_tls(lab: TlsLab, guarded_port: int, prefix: str) -> None:
    url = tls_url(guarded_port, lab.ca.cert, password=PASSWORD)
    run = make_run(TrackingDatabase.from_url(url, prefix=prefix), "tls", "/ws/tls", queued=2)
    cli = Cli(url, prefix)
    result = cli("runs", "list")
    assert run.id in ok(result)
    assert PASSWORD not in result.output
    # The recipe of docs/storage.md: the URL in MERLIN_TRACKING_URL.
    env = {"MERLIN_TRACKING_URL": url, "MERLIN_TRACKING_PREFIX": prefix}
    assert run.id in ok(cli("runs", "list", store=False, env=env))


def test_an_unverified_certificate_exits_3_with_one_line(
    lab: TlsLab, guarded_port: int, prefix: str
) -> None:
    url = tls_url(guarded_port, lab.stranger_ca.cert, password=PASSWORD)
    result = Cli(url, prefix)("runs", "list")
    said = fails(result, 3, "certificate could not be verified", "set ssl_ca_certs=")
    assert len(said.strip().splitlines()) == 1, said
    assert said.startswith("Error: tracking store at rediss://:***@127.0.0.1"), said
    assert PASSWORD not in result.output and PASSWORD not in said
