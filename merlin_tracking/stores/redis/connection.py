"""One Redis client per URL per process.

redis-py pools already reset themselves after ``fork``; keeping the client per (url, pid) also
means a prefork child never shares sockets with its parent. Timeouts keep a hung Redis from
hanging the caller forever.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from merlin_tracking.errors import InvalidRecordError

SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0

_clients: dict[tuple[str, int], redis.Redis] = {}
_lock = threading.Lock()


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (user names are kept)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def client_for(url: str) -> redis.Redis:
    """The shared client for ``url`` in this process."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise InvalidRecordError(
            f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}; use redis://, rediss:// "
            "or unix://"
        )
    cache_key = (url, os.getpid())
    client = _clients.get(cache_key)
    if client is None:
        with _lock:
            client = _clients.get(cache_key)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=CONNECT_TIMEOUT,
                    health_check_interval=30,
                    decode_responses=False,
                    # Two quick retries ride out a dropped connection; a refused one fails
                    # fast (callers buffer or report it) instead of backing off for seconds.
                    retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
                )
                _clients[cache_key] = client
    return client
