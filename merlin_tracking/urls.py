"""Store URLs: which schemes name which store, and how a URL is shown without its password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDIS_SCHEMES = ("redis", "rediss", "unix")
SQLITE_SCHEMES = ("sqlite",)
STORE_SCHEMES = (*REDIS_SCHEMES, *SQLITE_SCHEMES)


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-case ("" when it has none)."""
    return urlsplit(url).scheme.lower()


def is_redis_url(url: object) -> bool:
    return isinstance(url, str) and scheme_of(url) in REDIS_SCHEMES


def is_store_url(url: object) -> bool:
    return isinstance(url, str) and scheme_of(url) in STORE_SCHEMES


def supported_schemes() -> str:
    """``redis://, rediss://, unix://, sqlite://`` for error messages."""
    return ", ".join(f"{scheme}://" for scheme in STORE_SCHEMES)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (user names are kept); a URL too
    malformed to parse is masked by pattern, so a password is never shown either way."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = parts.port
    except ValueError:
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
    if password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


__all__ = [
    "REDIS_SCHEMES",
    "SQLITE_SCHEMES",
    "STORE_SCHEMES",
    "is_redis_url",
    "is_store_url",
    "mask_url",
    "scheme_of",
    "supported_schemes",
]
