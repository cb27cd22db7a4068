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

from merlin_tracking.errors import (
    InvalidRecordError,
    StoreError,
    StoreRefusedError,
    StoreUnavailableError,
)
from merlin_tracking.stores.redis.clients import make_client
from merlin_tracking.stores.redis.tls import tls_failure
from merlin_tracking.urls import REDIS_SCHEMES, is_redis_url, mask_url

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
        schemes = ", ".join(f"{scheme}://" for scheme in REDIS_SCHEMES)
        raise InvalidRecordError(f"unsupported Redis URL {mask_url(url)}; use {schemes}")
    cache_key = (url, os.getpid(), timeout)
    client = _clients.get(cache_key)
    if client is None:
        with _lock:
            client = _clients.get(cache_key)
            if client is None:
                with store_errors(mask_url(url)):  # a cluster client connects at once
                    client = make_client(
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


_NOPERM_ADVICE = (
    "the ACL user may not run this command or touch these keys: grant it the package's "
    "commands on the prefix's keys (`merlin-tracking acl --prefix PREFIX` prints them)"
)
# An ACL denial inside a script comes with the code ERR: Redis 7.0-7.1, then 7.2 onwards.
_SCRIPT_ACL_DENIALS = (
    "The user executing the script can't",
    "ACL failure in script",
)

_MASTERDOWN_ADVICE = (
    "the replica lost its master: point the URL at the master, or name the Sentinels with "
    "redis+sentinel://host:port/service_name"
)

# What a server's refusal means and what to do about it, by error code (redis-py drops the
# code from the message of the errors it has a class for).
_REFUSALS: tuple[tuple[type[Exception], str, str], ...] = (
    (
        redis.exceptions.OutOfMemoryError,
        "OOM",
        "the server is out of memory (maxmemory with the noeviction policy): free memory or "
        "raise maxmemory; old runs can go with `merlin-tracking gc` or tracking_task_retention",
    ),
    (
        redis.exceptions.ReadOnlyError,
        "READONLY",
        "this server is a read-only replica: point the URL at its master",
    ),
    (redis.exceptions.NoPermissionError, "NOPERM", _NOPERM_ADVICE),
    (
        redis.exceptions.AskError,  # MOVED too
        "MOVED",
        "this server is a Redis Cluster node that does not own the ledger's slot: name the "
        "cluster as redis+cluster://host:port[,host:port...] (docs/storage.md)",
    ),
    (
        redis.exceptions.TryAgainError,
        "TRYAGAIN",
        "the cluster is moving the ledger's slot: try again in a moment",
    ),
    (
        redis.exceptions.MasterDownError,  # a ClusterDownError to redis-py
        "MASTERDOWN",
        _MASTERDOWN_ADVICE,
    ),
    (
        redis.exceptions.ClusterDownError,
        "CLUSTERDOWN",
        "the cluster cannot serve the ledger's slot: wait for it to recover",
    ),
    (
        redis.exceptions.BusyLoadingError,
        "LOADING",
        "the server is loading its data set: try again in a moment",
    ),
)
# Refusals redis-py has no class for, by the code their message starts with.
_CODED_REFUSALS = {
    "BUSY": "the server is busy running a script: try again in a moment",
    "MASTERDOWN": _MASTERDOWN_ADVICE,
    "NOREPLICAS": "the master has too few replicas in sync to accept writes "
    "(min-replicas-to-write): wait for its replicas, or for the failover to finish",
    "NOPERM": _NOPERM_ADVICE,
}


def _refusal(exc: Exception) -> tuple[str, str] | None:
    """(code, what to do) when ``exc`` is a refusal the server may lift."""
    for kind, code, advice in _REFUSALS:
        if isinstance(exc, kind):
            if code == "MOVED" and not isinstance(exc, redis.exceptions.MovedError):
                code = "ASK"
            return code, advice
    said = str(exc)
    if said.startswith(_SCRIPT_ACL_DENIALS):
        return "NOPERM", _NOPERM_ADVICE
    for code, advice in _CODED_REFUSALS.items():
        if said.startswith(code + " ") or said == code:
            return code, advice
    return None


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
    except (redis.ConnectionError, redis.ResponseError) as exc:
        refusal = _refusal(exc)
        if refusal is not None:
            code, advice = refusal
            said = str(exc)
            said = said if said.startswith(code) else f"{code} {said}"
            raise StoreRefusedError(url, f"{said.rstrip('.')}; {advice}", code) from None
        if isinstance(exc, redis.ConnectionError):
            reason = tls_failure(exc, url) or str(exc) or type(exc).__name__
            raise StoreUnavailableError(url, reason) from None
        if str(exc).startswith(("NOAUTH", "WRONGPASS")):
            raise StoreUnavailableError(url, str(exc)) from None
        raise StoreError(url, str(exc) or type(exc).__name__) from None
    except (redis.exceptions.ClusterError, redis.exceptions.RedisClusterException) as exc:
        # No node of the cluster could serve the call (all down, slots not covered, too
        # many redirects): an outage, like a refused connection.
        raise StoreUnavailableError(url, str(exc) or type(exc).__name__) from None
    except redis.RedisError as exc:
        raise StoreError(url, str(exc) or type(exc).__name__) from None
