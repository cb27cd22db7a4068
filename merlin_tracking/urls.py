"""Store URLs: which schemes name which store, and how a URL is shown without its password."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
REDIS_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)
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
    """``redis://, rediss://, unix://, redis+cluster://, ..., sqlite://`` for error messages."""
    return ", ".join(f"{scheme}://" for scheme in STORE_SCHEMES)


# Credentials in free text (a command line, a setting, an error): the password of any
# ``scheme://user:password@host`` (up to the last "@" of the word: a password with an unescaped
# "/" or "@" is hidden too, with whatever follows it up to there), and the value of options
# and query parameters whose name ends in password, passwd, secret or token.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)\S*@")
_SECRET_OPTION = re.compile(
    r"(?i)(?P<head>(?<![\w-])--?[\w-]*(?:password|passwd|secret|token)(?:=|\s+))"
    r"(?P<value>[^\s]+)"
)
_SECRET_QUERY = re.compile(
    r"(?i)(?P<head>[?&;][\w.-]*(?:password|passwd|secret|token)[\w.-]*=)(?P<value>[^&;\s]+)"
)


def mask_secrets(text: str) -> str:
    """``text`` with every credential it carries replaced by ``***`` (see above): what the
    ledger stores of command lines and settings, and what messages show."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    text = _SECRET_QUERY.sub(r"\g<head>***", text)
    return _SECRET_OPTION.sub(r"\g<head>***", text)


def celery_sentinel_url(
    backend: str, service: str, sentinel_auth: Mapping[str, object] | None = None
) -> str:
    """Celery's Sentinel result backend (``sentinel://[:pw@]host:port[/db]`` once per Sentinel,
    joined by ``;``) as the ``redis+sentinel://`` URL of master ``service``: the credentials
    and database of the first that has them, every Sentinel's address, and the Sentinels' own
    ``username``/``password`` (Celery's ``sentinel_kwargs``) in the query."""
    login, db, hosts = "", "0", []
    for part in filter(None, (p.strip() for p in backend.split(";"))):
        split = urlsplit(part)
        credentials, _, address = split.netloc.rpartition("@")
        login = login or (credentials + "@" if credentials else "")
        hosts.append(address)
        db = split.path.strip("/") or db
    query = urlencode(
        {f"sentinel_{k}": str(v) for k, v in (sentinel_auth or {}).items() if k in _AUTH and v}
    )
    url = f"redis+sentinel://{login}{','.join(hosts)}/{service}/{db}"
    return f"{url}?{query}" if query else url


_AUTH = ("username", "password")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (user names are kept)."""
    return mask_secrets(url)


__all__ = [
    "CLUSTER_SCHEMES",
    "REDIS_SCHEMES",
    "SENTINEL_SCHEMES",
    "SQLITE_SCHEMES",
    "STORE_SCHEMES",
    "celery_sentinel_url",
    "is_redis_url",
    "is_store_url",
    "mask_secrets",
    "mask_url",
    "scheme_of",
    "supported_schemes",
]
