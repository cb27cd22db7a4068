"""One Redis client per URL per process, and what its failures mean to callers.

redis-py pools already reset themselves after ``fork``; keeping the client per (url, pid) also
means a prefork child never shares sockets with its parent. Timeouts keep a hung Redis from
hanging the caller forever. Callers see only ``StoreError`` / ``StoreUnavailableError``, never
redis-py's own exceptions, so they can buffer or report an outage without importing redis.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from merlin_tracking.errors import InvalidRecordError, StoreError, StoreUnavailableError
from merlin_tracking.urls import is_redis_url, mask_url

#: Seconds a command may wait for the server's answer, unless the caller asks for another
#: (``timeout``: the CLI waits a few seconds; workers buffer, so they can wait longer).
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0

_clients: dict[tuple[str, int, float | None], redis.Redis] = {}
_lock = threading.Lock()


def client_for(url: str, timeout: float | None = None) -> redis.Redis:
    """The shared client for ``url`` (and ``timeout``: seconds to connect and to wait for an
    answer; default ``SOCKET_TIMEOUT`` and ``CONNECT_TIMEOUT``) in this process."""
    if not is_redis_url(url):
        raise InvalidRecordError(
            f"unsupported Redis URL {mask_url(url)}; use redis://, rediss:// or unix://"
        )
    cache_key = (url, os.getpid(), timeout)
    client = _clients.get(cache_key)
    if client is None:
        with _lock:
            client = _clients.get(cache_key)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=SOCKET_TIMEOUT if timeout is None else timeout,
                    socket_connect_timeout=(
                        CONNECT_TIMEOUT if timeout is None else min(timeout, CONNECT_TIMEOUT)
                    ),
                    health_check_interval=30,
                    decode_responses=False,
                    # Two quick retries ride out a dropped connection; a refused one fails
                    # fast (callers buffer or report it) instead of backing off for seconds.
                    # A timeout is not retried: a server that does not answer in time would
                    # make every retry wait as long again.
                    retry=Retry(
                        ExponentialBackoff(cap=0.2, base=0.02),
                        2,
                        supported_errors=(redis.ConnectionError,),
                    ),
                )
                _clients[cache_key] = client
    return client


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Raise redis-py's errors as store errors naming ``url`` (already masked)."""
    try:
        yield
    except redis.TimeoutError as exc:
        said = str(exc) or "Timeout"
        raise StoreUnavailableError(
            url,
            f"{said}: the server did not answer in time (frozen, overloaded or not a Redis "
            "server?); if it is only slow, allow more seconds (--timeout, tracking_timeout)",
        ) from None
    except redis.ConnectionError as exc:
        raise StoreUnavailableError(url, str(exc) or type(exc).__name__) from None
    except redis.exceptions.NoPermissionError as exc:
        raise StoreUnavailableError(url, f"NOPERM: {exc}") from None
    except redis.ResponseError as exc:
        if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise StoreUnavailableError(url, str(exc)) from None
        raise StoreError(url, str(exc) or type(exc).__name__) from None
    except redis.RedisError as exc:
        raise StoreError(url, str(exc) or type(exc).__name__) from None
