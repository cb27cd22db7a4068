"""Throwaway certificate authorities and TLS redis-servers for the TLS tests.

Certificates are made by the ``openssl`` command (P-256 keys, valid one day) in a folder of the
test's. ``TlsLab`` holds what the TLS tests use: the CA the servers trust, a stranger CA, server
certificates for 127.0.0.1 and localhost or for another name only, client certificates from
either CA, and the servers it started (``serve``), closed with the lab.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.redis_server import RedisServer, RedisServerError, free_port

#: The password of the lab's servers that want one: it must never show in an error or a record.
PASSWORD = "tls-s3cr3t-Hunter2"
#: The name of the certificate issued for another host (no 127.0.0.1 or localhost in it).
OTHER_NAME = "not-this-host"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


class CertificateAuthority:
    """A self-signed CA in ``folder`` that issues server and client certificates."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.cert, self.key = folder / f"{name}.crt", folder / f"{name}.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", "1", "-subj", f"/CN={name}",
                 "-keyout", str(self.key), "-out", str(self.cert))  # fmt: skip

    def issue(self, name: str, common_name: str, alt_names: Sequence[str] = ()) -> Certificate:
        """A certificate for ``common_name`` with ``alt_names`` (``IP:...``, ``DNS:...``) as its
        subject alternative names, signed by this CA."""
        issued = Certificate(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        request = self.folder / f"{name}.csr"
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", f"/CN={common_name}", "-keyout", str(issued.key), "-out", str(request))  # fmt: skip
        extensions = self.folder / f"{name}.ext"
        extensions.write_text(f"subjectAltName={','.join(alt_names)}\n" if alt_names else "")
        _openssl("x509", "-req", "-in", str(request), "-CA", str(self.cert),
                 "-CAkey", str(self.key), "-CAcreateserial", "-days", "1",
                 "-extfile", str(extensions), "-out", str(issued.cert))  # fmt: skip
        return issued


def tls_url(
    port: int,
    ca: Path | None,
    host: str = "127.0.0.1",
    password: str | None = None,
    client: Certificate | None = None,
    **query: str,
) -> str:
    """``rediss://[:password@]host:port/0?ssl_ca_certs=CA[&ssl_certfile=..&ssl_keyfile=..]``
    with ``query`` added (``ssl_check_hostname="false"``, say)."""
    options = {"ssl_ca_certs": str(ca)} if ca is not None else {}
    if client is not None:
        options.update(ssl_certfile=str(client.cert), ssl_keyfile=str(client.key))
    options.update(query)
    login = f":{password}@" if password else ""
    return f"rediss://{login}{host}:{port}/0" + (
        f"?{urlencode(options, safe='/')}" if options else ""
    )


@dataclass
class TlsLab:
    folder: Path
    ca: CertificateAuthority
    stranger_ca: CertificateAuthority
    server: Certificate  # for IP:127.0.0.1 and DNS:localhost
    other_name: Certificate  # for OTHER_NAME only
    client: Certificate  # signed by ``ca``
    stranger_client: Certificate  # signed by ``stranger_ca``
    servers: list[RedisServer] = field(default_factory=list)

    def serve(
        self,
        certificate: Certificate | None = None,
        auth_clients: bool = False,
        password: str | None = None,
    ) -> int:
        """Start a redis-server that speaks TLS only, on a port of its own, with
        ``certificate`` (default ``server``), trusting ``ca``; its port."""
        certificate = certificate or self.server
        port = free_port()
        # How the launcher checks that it answers: a URL that gets through.
        check_url = tls_url(
            port,
            self.ca.cert,
            password=password,
            client=self.client if auth_clients else None,
            ssl_check_hostname="false",
        )
        extra = ["--port", "0", "--tls-port", str(port),
                 "--tls-cert-file", str(certificate.cert), "--tls-key-file", str(certificate.key),
                 "--tls-ca-cert-file", str(self.ca.cert),
                 "--tls-auth-clients", "yes" if auth_clients else "no"]  # fmt: skip
        if password:
            extra += ["--requirepass", password]
        server = RedisServer(extra, port=port, url=check_url, name="mt-tls-redis-")
        try:
            server.start()
        except RedisServerError as exc:
            if "exited" in str(exc):
                pytest.skip(f"this redis-server was built without TLS support ({exc})")
            raise
        self.servers.append(server)
        return port

    def close(self) -> None:
        while self.servers:
            self.servers.pop().close()


@contextlib.contextmanager
def tls_lab(folder: Path) -> Iterator[TlsLab]:
    """Make the lab's certificates in ``folder``; stop its servers at the end. Skips the test
    when openssl is not installed."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca = CertificateAuthority(folder, "test-ca")
    stranger = CertificateAuthority(folder, "stranger-ca")
    lab = TlsLab(
        folder,
        ca,
        stranger,
        server=ca.issue("server", "127.0.0.1", ["IP:127.0.0.1", "DNS:localhost"]),
        other_name=ca.issue("other-name", OTHER_NAME, [f"DNS:{OTHER_NAME}"]),
        client=ca.issue("client", "tracking-client"),
        stranger_client=stranger.issue("stranger-client", "tracking-client"),
    )
    try:
        yield lab
    finally:
        lab.close()
