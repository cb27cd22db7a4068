"""TLS against real TLS redis-servers: certificates verified, host names checked, client
certificates; every refusal a ``StoreUnavailableError`` saying which ``ssl_*`` option to set,
with the password masked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from merlin_tracking import StoreUnavailableError, TrackingDatabase
from merlin_tracking.config import TrackingConfig
from tests.support.redis_server import free_port
from tests.support.tls import PASSWORD, TlsLab, tls_lab, tls_url


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    with tls_lab(tmp_path_factory.mktemp("tls")) as made:
        yield made


@pytest.fixture(scope="module")
def guarded_port(lab: TlsLab) -> int:
    """A TLS server with the right certificate that wants ``PASSWORD``."""
    return lab.serve(password=PASSWORD)


@pytest.fixture(scope="module")
def other_name_port(lab: TlsLab) -> int:
    """A TLS server whose certificate (from the trusted CA) is for ``OTHER_NAME`` only."""
    return lab.serve(lab.other_name)


@pytest.fixture(scope="module")
def mutual_port(lab: TlsLab) -> int:
    """A TLS server that wants a client certificate signed by the lab's CA."""
    return lab.serve(auth_clients=True)


def refusal(url: str, prefix: str) -> str:
    """The message of the store error an operation on ``url`` raises."""
    db = TrackingDatabase.from_url(url, prefix=prefix)
    with pytest.raises(StoreUnavailableError) as caught:
        db.runs.get_all()
    message = str(caught.value)
    assert PASSWORD not in message and PASSWORD not in repr(caught.value)
    assert message.startswith("tracking store at rediss://"), message
    return message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verified_certificate_and_host_name(
    lab: TlsLab, guarded_port: int, prefix: str, host: str
) -> None:
    url = tls_url(guarded_port, lab.ca.cert, host=host, password=PASSWORD)
    db = TrackingDatabase.from_url(url, prefix=prefix)
    run = db.runs.create("tls", "/ws/tls", ["q"])
    assert db.runs.get("/ws/tls") == run
    shown = db.info()["url"]
    assert shown.startswith("rediss://:***@") and PASSWORD not in shown


def test_a_certificate_from_another_ca_is_refused(
    lab: TlsLab, guarded_port: int, prefix: str
) -> None:
    message = refusal(tls_url(guarded_port, lab.stranger_ca.cert, password=PASSWORD), prefix)
    assert "certificate could not be verified" in message, message
    assert "against the CA certificates in ssl_ca_certs" in message, message
    assert "set ssl_ca_certs=/path/to/ca.crt in the URL" in message, message
    assert "rediss://:***@127.0.0.1" in message


def test_no_ca_in_the_url_verifies_against_the_system_cas(
    lab: TlsLab, guarded_port: int, prefix: str
) -> None:
    message = refusal(tls_url(guarded_port, None, password=PASSWORD), prefix)
    assert "certificate could not be verified" in message, message
    assert "the system's CA certificates (no ssl_ca_certs in the URL)" in message, message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_certificate_for_another_name_is_refused_by_default(
    lab: TlsLab, other_name_port: int, prefix: str, host: str
) -> None:
    message = refusal(tls_url(other_name_port, lab.ca.cert, host=host), prefix)
    assert "certificate is not issued for the host of the URL" in message, message
    assert f"not valid for '{host}'" in message, message
    assert "ssl_check_hostname=false" in message, message


def test_host_name_check_can_be_turned_off(lab: TlsLab, other_name_port: int, prefix: str) -> None:
    url = tls_url(other_name_port, lab.ca.cert, ssl_check_hostname="false")
    db = TrackingDatabase.from_url(url, prefix=prefix)
    assert db.runs.create("tls", "/ws/unnamed", ["q"]).workspace == "/ws/unnamed"
    # The certificate itself is still verified.
    message = refusal(
        tls_url(other_name_port, lab.stranger_ca.cert, ssl_check_hostname="false"), prefix
    )
    assert "certificate could not be verified" in message, message


def test_mutual_tls_wants_a_client_certificate(lab: TlsLab, mutual_port: int, prefix: str) -> None:
    message = refusal(tls_url(mutual_port, lab.ca.cert), prefix)
    assert "client certificate" in message, message
    assert "set ssl_certfile and ssl_keyfile in the URL" in message, message

    url = tls_url(mutual_port, lab.ca.cert, client=lab.client)
    db = TrackingDatabase.from_url(url, prefix=prefix)
    assert db.runs.create("mtls", "/ws/mtls", ["q"]).workspace == "/ws/mtls"


def test_mutual_tls_refuses_a_client_certificate_from_another_ca(
    lab: TlsLab, mutual_port: int, prefix: str
) -> None:
    message = refusal(tls_url(mutual_port, lab.ca.cert, client=lab.stranger_client), prefix)
    assert "client certificate in ssl_certfile" in message, message
    assert "signed by a CA in the server's tls-ca-cert-file" in message, message


def test_a_missing_certificate_file_is_named(lab: TlsLab, guarded_port: int, prefix: str) -> None:
    missing = lab.folder / "nowhere" / "ca.crt"
    message = refusal(tls_url(guarded_port, missing, password=PASSWORD), prefix)
    assert f"TLS: no such file: ssl_ca_certs={missing}" in message, message


def test_a_key_that_does_not_match_its_certificate(
    lab: TlsLab, mutual_port: int, prefix: str
) -> None:
    url = tls_url(mutual_port, lab.ca.cert, ssl_certfile=str(lab.client.cert),
                  ssl_keyfile=str(lab.stranger_client.key))  # fmt: skip
    message = refusal(url, prefix)
    assert "could not be loaded (KEY_VALUES_MISMATCH)" in message, message


def test_other_connection_failures_keep_their_message(lab: TlsLab, prefix: str) -> None:
    message = refusal(tls_url(free_port(), lab.ca.cert), prefix)  # nothing listens there
    assert "TLS:" not in message and "refused" in message.lower(), message


def test_celerys_spelling_of_the_certificate_check_is_understood(
    lab: TlsLab, guarded_port: int, prefix: str
) -> None:
    """A Celery result backend written ``rediss://...?ssl_cert_reqs=CERT_REQUIRED`` is the
    default ledger as it is: redis-py itself would refuse that spelling."""
    url = tls_url(guarded_port, lab.ca.cert, password=PASSWORD) + "&ssl_cert_reqs=CERT_REQUIRED"
    config = TrackingConfig.from_app_conf({"result_backend": url}, environ={})
    db = TrackingDatabase.from_url(config.url, prefix=prefix)
    assert db.runs.create("tls", "/ws/celery-spelling", ["q"]).workspace == "/ws/celery-spelling"
