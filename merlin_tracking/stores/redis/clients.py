"""Turns a ledger URL into a redis-py client for the topology it names.

- ``redis://``, ``rediss://``, ``unix://``: one server (redis-py's own URL syntax).
- ``redis+cluster://[user:pw@]host:port[,host:port...][/0]``: a Redis Cluster, found through any
  of the nodes named (redis-py's ``RedisCluster``, which follows MOVED/ASK itself). Every key
  of a prefix shares one hash slot (``keys.py``), so each script and pipeline goes to one node.
- ``redis+sentinel://[user:pw@]host:port[,host:port...]/service_name[/db]``: the master that
  the Sentinels name ``service_name``, found again after a failover (redis-py's ``Sentinel``).
  The credentials are the master's; ``sentinel_username`` / ``sentinel_password`` in the query
  are the Sentinels' own, when they have any.

``rediss+cluster://`` and ``rediss+sentinel://`` use TLS, with the ``ssl_*`` query parameters
of ``rediss://``. The rest of the query (``ssl_ca_certs=...``, ``health_check_interval=...``)
means what it means in a ``redis://`` URL, so it is read by redis-py's own parser.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from merlin_tracking.errors import InvalidRecordError
from merlin_tracking.urls import CLUSTER_SCHEMES, SENTINEL_SCHEMES, mask_url, scheme_of

_SENTINEL_AUTH = ("sentinel_username", "sentinel_password")


@dataclasses.dataclass(frozen=True)
class Topology:
    """What a ledger URL names: ``kind`` is ``server``, ``cluster`` or ``sentinel``."""

    kind: str
    #: A one-server URL with the credentials, db, TLS and query of the whole URL (and the
    #: first host): what redis-py's URL parser reads the connection options from.
    node_url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    sentinel_auth: tuple[tuple[str, str], ...] = ()


def topology_of(url: str) -> Topology:
    """Parse ``url``; a malformed cluster or sentinel URL raises ``InvalidRecordError``
    naming what is wrong and the form expected."""
    scheme = scheme_of(url)
    if scheme in CLUSTER_SCHEMES:
        return _multi_host(url, "cluster", "host:port[,host:port...][/0]")
    if scheme in SENTINEL_SCHEMES:
        return _multi_host(url, "sentinel", "host:port[,host:port...]/service_name[/db]")
    _parsed(url, url)
    return Topology("server", url)


def _parsed(url: str, shown_for: str) -> dict[str, Any]:
    """redis-py's reading of a one-server URL; what it cannot read raises
    ``InvalidRecordError`` naming the URL (masked)."""
    try:
        return dict(redis.connection.parse_url(url))  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise InvalidRecordError(f"{mask_url(shown_for)}: {exc}") from None


def _multi_host(url: str, kind: str, form: str) -> Topology:
    shown = mask_url(url)
    scheme = scheme_of(url)
    expected = f"expected {scheme}://[user:password@]{form}"
    parts = urlsplit(url)
    credentials, _, host_list = parts.netloc.rpartition("@")
    hosts = tuple(_host_port(item, shown, expected) for item in host_list.split(","))
    path = [unquote(p) for p in parts.path.split("/") if p]
    service = None
    if kind == "sentinel":
        if not path:
            raise InvalidRecordError(f"{shown}: no service name; {expected}")
        service, *path = path
    if len(path) > 1 or (path and not path[0].isdigit()):
        raise InvalidRecordError(f"{shown}: {parts.path!r} is not a database number; {expected}")
    db = int(path[0]) if path else 0
    if kind == "cluster" and db != 0:
        raise InvalidRecordError(f"{shown}: a Redis Cluster has database 0 only; {expected}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    sentinel_auth = tuple((k, v) for k, v in query if k in _SENTINEL_AUTH)
    rest = urlencode([(k, v) for k, v in query if k not in _SENTINEL_AUTH])
    data_scheme = "rediss" if scheme.startswith("rediss") else "redis"
    login = f"{credentials}@" if credentials else ""
    host, port = hosts[0]
    node_url = f"{data_scheme}://{login}{_netloc(host, port)}/{db}" + (f"?{rest}" if rest else "")
    _parsed(node_url, url)
    return Topology(kind, node_url, hosts, service, sentinel_auth)


def _host_port(item: str, shown: str, expected: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    host = host.strip("[]")  # IPv6 literals are written [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRecordError(f"{shown}: {item!r} is not a host:port; {expected}")
    return host, int(port)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Celery's spelling of a rediss:// backend's certificate check (``ssl_cert_reqs=CERT_REQUIRED``)
# in redis-py's (``required``): the ledger follows the result backend's URL as it is written.
_CELERY_CERT_REQS = re.compile(r"(?i)([?&]ssl_cert_reqs=)CERT_(REQUIRED|OPTIONAL|NONE)\b")


def _redis_py_spelling(url: str) -> str:
    return _CELERY_CERT_REQS.sub(lambda m: m.group(1) + m.group(2).lower(), url)


def make_client(url: str, **options: Any) -> redis.Redis:
    """A client for ``url`` with redis-py connection ``options`` (timeouts, retry, ...).

    A cluster client is returned as ``redis.Redis`` for the store's sake: it offers the same
    commands and pipelines, and the store only uses those that work on both (scripts by
    ``EVALSHA`` through ``execute_command``, every key under one hash tag; ``server_of`` for
    commands about the server itself).
    """
    url = _redis_py_spelling(url)
    found = topology_of(url)
    if found.kind == "server":
        return redis.Redis.from_url(url, **options)
    kwargs = {**_parsed(found.node_url, url), **options}
    for name in ("host", "port", "connection_class"):
        kwargs.pop(name, None)
    tls = found.node_url.startswith("rediss:")
    if found.kind == "cluster":
        kwargs.pop("db", None)
        nodes = [ClusterNode(host, port) for host, port in found.hosts]  # type: ignore[no-untyped-call]
        return cast(redis.Redis, RedisCluster(startup_nodes=nodes, ssl=tls, **kwargs))
    assert found.service is not None
    sentinel_options: dict[str, Any] = {
        k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout", "retry") if k in kwargs
    }
    if tls:
        sentinel_options.update({k: v for k, v in kwargs.items() if k.startswith("ssl")})
        sentinel_options["ssl"] = True
    for name, value in found.sentinel_auth:
        sentinel_options[name.removeprefix("sentinel_")] = value
    sentinels = Sentinel(list(found.hosts), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    connection = _SentinelTlsConnection if tls else _SentinelConnection
    master: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        found.service, connection_class=connection, **kwargs
    )
    return master


class _ReplacedMasterCheck:
    """A master that refuses writes for want of replicas (``NOREPLICAS``, with
    ``min-replicas-to-write``) has most likely just been replaced by a failover: its replica
    was promoted and left. Drop the connection so the next one asks the Sentinels again, as
    redis-py does for a ``READONLY`` master, instead of retrying the old master until the
    Sentinels demote it (up to ~15 s)."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ResponseError as exc:
            if str(exc).startswith("NOREPLICAS") and self.connection_pool.is_master:  # type: ignore[attr-defined]
                self.disconnect()  # type: ignore[attr-defined]
                raise redis.ConnectionError(
                    f"{exc} (the master may have been replaced: asking the Sentinels again)"
                ) from exc
            raise


class _SentinelConnection(_ReplacedMasterCheck, SentinelManagedConnection):
    pass


class _SentinelTlsConnection(_ReplacedMasterCheck, SentinelManagedSSLConnection):
    pass


def server_of(client: object, key: str) -> dict[str, Any]:
    """Options that send a keyless command (INFO, PING) to the server that holds ``key``: on a
    cluster, the node owning its slot; elsewhere the one server."""
    if isinstance(client, RedisCluster):
        return {"target_nodes": client.get_node_from_key(key)}  # type: ignore[no-untyped-call]
    return {}


__all__ = ["Topology", "make_client", "server_of", "topology_of"]
