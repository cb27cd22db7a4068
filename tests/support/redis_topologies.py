"""Redis topologies of the tests: a 3-master Cluster and a master with a replica and a Sentinel.

Every node is a ``RedisServer`` (``redis_server.py``) on a free loopback port, so each can be
stopped, killed and inspected like any server of the tests.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import pytest
import redis

from tests.support.redis_server import RedisServer, RedisServerError, free_port


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RedisServerError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Topology(Protocol):
    def start(self) -> _Topology: ...
    def close(self) -> None: ...


T = TypeVar("T", bound=_Topology)


def running(topology: T, what: str) -> Iterator[T]:
    """A fixture's body: ``topology`` started (the test fails, saying why, if it cannot
    start), then closed."""
    try:
        topology.start()
    except RedisServerError as exc:
        pytest.fail(f"could not start {what}: {exc}")
    try:
        yield topology
    finally:
        topology.close()


class RedisClusterNodes:
    """Three masters, no replicas, all 16384 slots covered (``redis-cli --cluster create``)."""

    def __init__(self, masters: int = 3) -> None:
        self.servers = [
            RedisServer(
                # The bus port is named: the default (port + 10000) may be out of range.
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    str(free_port()),
                ],
                name="mt-cluster-",
            )
            for _ in range(masters)
        ]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{server.port}" for server in self.servers]

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node."""
        return "redis+cluster://" + ",".join(self.addresses) + "/0"

    def node_url(self, index: int) -> str:
        return self.servers[index].url

    def start(self) -> RedisClusterNodes:
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> RedisClusterNodes:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerError("redis-cli is not installed: run scripts/test.sh")
        for server in self.servers:
            server.start()
        made = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *self.addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if made.returncode != 0:
            raise RedisServerError(f"redis-cli --cluster create failed: {made.stdout}{made.stderr}")
        clients = [redis.Redis(port=server.port) for server in self.servers]
        try:
            wait_for(
                lambda: all(
                    b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients
                ),
                30,
                "the cluster to cover every slot",
            )
        finally:
            for client in clients:
                client.close()
        return self

    def owner_of(self, key: str) -> int:
        """Index of the server that owns ``key``'s slot."""
        client = redis.Redis(port=self.servers[0].port)
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for first, last, (_host, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return [s.port for s in self.servers].index(int(port))
        finally:
            client.close()
        raise RedisServerError(f"no node owns the slot of {key!r}")

    def close(self) -> None:
        for server in self.servers:
            server.close()


class RedisSentinelGroup:
    """A master, its replica and one Sentinel watching them as ``service``.

    The master refuses writes while it has no replica in sync (``min-replicas-to-write 1``), the
    setting docs/storage.md recommends: after a failover the old master cannot take a write the
    new one will never see.
    """

    def __init__(self, service: str = "tracking", password: str | None = None) -> None:
        self.service = service
        self.password = password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.master = RedisServer(
            [*auth, "--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"],
            name="mt-sentinel-master-",
        )
        self.master.url = self._data_url(self.master.port)
        self.replica = RedisServer(
            [
                *auth,
                "--replicaof",
                "127.0.0.1",
                str(self.master.port),
                "--min-replicas-to-write",
                "1",
                "--min-replicas-max-lag",
                "2",
            ],
            name="mt-sentinel-replica-",
        )
        self.replica.url = self._data_url(self.replica.port)
        self.sentinel_port = free_port()
        self.sentinel: RedisServer | None = None

    def _data_url(self, port: int) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{port}/0"

    @property
    def url(self) -> str:
        """``redis+sentinel://`` URL of the service (db 0)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{auth}127.0.0.1:{self.sentinel_port}/{self.service}/0"

    def start(self) -> RedisSentinelGroup:
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> RedisSentinelGroup:
        self.master.start()
        self.replica.start()
        wait_for(self.in_sync, 30, "the replica to sync")
        sentinel = RedisServer(port=self.sentinel_port, name="mt-sentinel-")
        config = f"{sentinel.dir}/sentinel.conf"
        lines = [
            f"port {self.sentinel_port}",
            "bind 127.0.0.1",
            f"dir {sentinel.dir}",
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {self.service} 2000",
            f"sentinel failover-timeout {self.service} 10000",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.service} {self.password}")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        # A sentinel is redis-server in sentinel mode, with a config file it may rewrite.
        sentinel.extra = [config, "--sentinel"]
        self.sentinel = _start_sentinel(sentinel)
        wait_for(
            lambda: self.master_port() == self.master.port, 30, "the sentinel to see the master"
        )
        # The sentinel learns of the replica from the master's INFO (every 10 s at first).
        wait_for(self._replica_known, 30, "the sentinel to see the replica")
        return self

    def _replica_known(self) -> bool:
        client = self.sentinel_client()
        try:
            replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)
        finally:
            client.close()
        return any(
            replica.get(b"flags") == b"slave" and replica.get(b"master-link-status") == b"ok"
            for replica in replicas
        )

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, socket_timeout=5)

    def master_port(self) -> int | None:
        client = self.sentinel_client()
        try:
            found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        except redis.RedisError:
            return None
        finally:
            client.close()
        return int(found[1]) if found else None

    def in_sync(self) -> bool:
        client = redis.Redis.from_url(self.replica.url)
        try:
            return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def failover(self) -> None:
        """``SENTINEL FAILOVER``, then wait until the sentinel names the replica as master (about
        a second); ``demoted`` waits for the rest."""
        old = self.master
        wait_for(self._failover_started, 30, "the sentinel to accept the failover")
        wait_for(lambda: self.master_port() == self.replica.port, 60, "the failover")
        self.master, self.replica = self.replica, old

    def demoted(self) -> None:
        """Wait until the old master serves as the new one's replica: the Sentinel tells it so
        when it next looks at it (up to ~15 s after the switch)."""
        wait_for(self.in_sync, 60, "the old master to serve as a replica")
        wait_for(self._replica_known, 30, "the sentinel to see the old master as a replica")

    def _failover_started(self) -> bool:
        # A replica the sentinel has only just met is not yet a candidate: NOGOODSLAVE.
        client = self.sentinel_client()
        try:
            client.execute_command("SENTINEL", "FAILOVER", self.service)
        except redis.ResponseError as exc:
            if str(exc).startswith("NOGOODSLAVE"):
                return False
            raise
        finally:
            client.close()
        return True

    def close(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            if server is not None:
                server.close()


def _start_sentinel(server: RedisServer) -> RedisServer:
    """Start ``server`` as a sentinel: the config file first, none of the data-set options."""
    server.proc = subprocess.Popen(
        [server.binary, *server.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = redis.Redis(port=server.port, socket_connect_timeout=1)
    try:
        wait_for(lambda: _pings(server, client), 10, "the sentinel to answer")
    finally:
        client.close()
    return server


def _pings(server: RedisServer, client: redis.Redis) -> bool:
    assert server.proc is not None
    if server.proc.poll() is not None:
        raise RedisServerError(f"redis-server --sentinel exited with {server.proc.returncode}")
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
