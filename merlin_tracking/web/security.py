"""Who may write: the write switch, the token, and the CSRF check of the page forms.

The API takes the token on every write request (``Authorization: Bearer TOKEN``); a browser
cannot add that header to a cross-site request, so the API needs no CSRF check. The pages
cannot send a header from a form: a person gives the token once on ``/login``, and the server
sets a cookie that is an HMAC of the token and a random session id, so that every form write
proves the token again (a cookie from a server started with another token fails) without the
token itself sitting in the browser. Each form also carries a CSRF value, another HMAC of the
session id, which a page of another site cannot read, and the request's ``Origin`` (when sent)
must be this server.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

SESSION_COOKIE = "mt_session"
AUTH_COOKIE = "mt_auth"
CSRF_FIELD = "csrf"
TOKEN_ENV = "MERLIN_TRACKING_TOKEN"


class WriteRefused(Exception):
    """A write the server does not do: ``status`` is the HTTP code, ``message`` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class WritePolicy:
    """``allow_writes`` and the token (None: none given). Writes need both."""

    allow_writes: bool = False
    token: str | None = None

    def _sign(self, purpose: str, session: str) -> str:
        assert self.token is not None
        return hmac.new(
            self.token.encode(), f"{purpose}:{session}".encode(), hashlib.sha256
        ).hexdigest()

    def auth_value(self, session: str) -> str:
        """The ``mt_auth`` cookie of a session that gave the right token."""
        return self._sign("auth", session)

    def csrf_value(self, session: str) -> str:
        """The CSRF field of the forms of a session; empty when writes are off."""
        return self._sign("csrf", session) if self.writable else ""

    @property
    def writable(self) -> bool:
        return self.allow_writes and bool(self.token)

    def _enabled(self) -> None:
        if not self.writable:
            raise WriteRefused(
                403, "writes are disabled: start the server with --allow-writes and a token"
            )

    def check_token(self, given: str | None) -> None:
        """An API write (or a login): the token given must be the server's."""
        self._enabled()
        assert self.token is not None
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise WriteRefused(401, "missing or wrong token")

    def check_csrf(self, session: str | None, csrf: str | None, origin_ok: bool) -> None:
        """A form (a write, or the login): same origin, and the CSRF value of its session."""
        self._enabled()
        if not origin_ok:
            raise WriteRefused(403, "cross-origin form refused")
        if not session or not csrf or not hmac.compare_digest(csrf, self.csrf_value(session)):
            raise WriteRefused(403, "missing or wrong CSRF token: reload the page")

    def check_form(
        self, session: str | None, auth: str | None, csrf: str | None, origin_ok: bool
    ) -> None:
        """A page form write: logged in with the token, right CSRF value, same origin."""
        self.check_csrf(session, csrf, origin_ok)
        assert session is not None
        if not auth or not hmac.compare_digest(auth, self.auth_value(session)):
            raise WriteRefused(401, "log in with the server's token first")


def new_session() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
