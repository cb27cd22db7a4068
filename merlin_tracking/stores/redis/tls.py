"""What a failed TLS connection to Redis means, and which ``ssl_*`` option of the URL fixes it.

redis-py reports a TLS failure as a ``ConnectionError`` carrying OpenSSL's words ("certificate
verify failed: self-signed certificate in certificate chain (_ssl.c:1006)"), which do not say
what the user should change. The original ``ssl`` error is the ``ConnectionError``'s context;
its type and codes say which of the URL's options is wrong.

redis-py checks a ``rediss://`` server's certificate and host name by default
(``ssl_cert_reqs=required``, ``ssl_check_hostname=true``); ``ssl_check_hostname=false`` in the
URL's query turns the name check off and keeps the certificate check.
"""

from __future__ import annotations

import os
import ssl
from urllib.parse import parse_qs, urlsplit

from merlin_tracking.urls import scheme_of

#: The query options of a ``rediss://`` URL that name files (redis-py's ``SSLConnection``).
FILE_OPTIONS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_EMAIL_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = frozenset({62, 63, 64})

# Alerts of a server that wants a client certificate it trusts (tls-auth-clients yes).
_CLIENT_CERTIFICATE_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
    }
)

_CLIENT_CERTIFICATE_ADVICE = (
    "set ssl_certfile and ssl_keyfile in the URL to a client certificate (and its key) signed by "
    "a CA in the server's tls-ca-cert-file"
)


def tls_failure(exc: BaseException, url: str) -> str | None:
    """The reason to report for ``exc``, a redis-py ``ConnectionError`` on ``url`` (masked is
    fine: only its scheme and ``ssl_*`` options are read), when TLS made the connection fail:
    what went wrong and which URL option to set. ``None`` for any other failure."""
    if not scheme_of(url).startswith("rediss"):  # rediss://, rediss+cluster://, ...
        return None
    cause = _os_error(exc)
    if cause is None:
        return None
    options = ssl_options(url)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return _unverified(cause, options)
    if isinstance(cause, ssl.SSLEOFError) or (
        isinstance(cause, ssl.SSLError) and cause.reason in _CLIENT_CERTIFICATE_ALERTS
    ):
        return _client_certificate_refused(cause, options)
    if isinstance(cause, FileNotFoundError):
        missing = [f"{name}={path}" for name, path in options.items() if not os.path.exists(path)]
        if missing:
            return f"TLS: no such file: {', '.join(missing)}; fix the path in the URL"
        return None
    if isinstance(cause, ssl.SSLError) and cause.library in ("PEM", "X509"):
        return (
            f"TLS: a certificate or key named in the URL could not be loaded ({cause.reason}): "
            "ssl_ca_certs must hold the CA certificates (PEM), ssl_certfile the client "
            "certificate and ssl_keyfile its private key"
        )
    return None


def ssl_options(url: str) -> dict[str, str]:
    """The file options (``FILE_OPTIONS``) set in ``url``'s query, by name."""
    query = parse_qs(urlsplit(url).query)
    return {name: query[name][0] for name in FILE_OPTIONS if query.get(name)}


def _os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` (``ssl.SSLError`` is one) behind ``exc``: itself, or the error redis-py
    was handling when it raised ``exc``."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        if isinstance(candidate, OSError):
            return candidate
    return None


def _unverified(cause: ssl.SSLCertVerificationError, options: dict[str, str]) -> str:
    said = (cause.verify_message or "certificate verify failed").rstrip(".")
    if cause.verify_code in _NAME_MISMATCH:
        return (
            f"TLS: the server's certificate is not issued for the host of the URL ({said}): "
            "connect to a host name or address the certificate lists, or set "
            "ssl_check_hostname=false in the URL to skip the name check (the certificate is "
            "still verified)"
        )
    trusted = (
        "the CA certificates in ssl_ca_certs"
        if "ssl_ca_certs" in options or "ssl_ca_path" in options
        else "the system's CA certificates (no ssl_ca_certs in the URL)"
    )
    return (
        f"TLS: the server's certificate could not be verified ({said}) against {trusted}: set "
        "ssl_ca_certs=/path/to/ca.crt in the URL to the CA certificate that signed it"
    )


def _client_certificate_refused(cause: ssl.SSLError, options: dict[str, str]) -> str:
    # Under TLS 1.3 the server judges the client's certificate after the handshake: the client
    # reads its alert, or only the connection closing (SSLEOFError), on its first command.
    alert = cause.reason if cause.reason in _CLIENT_CERTIFICATE_ALERTS else None
    if "ssl_certfile" in options:
        what = (
            f"the server refused the client certificate in ssl_certfile ({alert})"
            if alert
            else "the server closed the connection: it may not trust the client certificate "
            "in ssl_certfile"
        )
    else:
        what = (
            f"the server wants a client certificate ({alert})"
            if alert
            else "the server closed the connection: it may want a client certificate "
            "(tls-auth-clients yes)"
        )
    return f"TLS: {what}; {_CLIENT_CERTIFICATE_ADVICE}"


__all__ = ["FILE_OPTIONS", "ssl_options", "tls_failure"]
