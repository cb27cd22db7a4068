"""A ledger on a real 3-master Redis Cluster started on loopback ports.

``redis+cluster://`` names the cluster through any of its nodes; every operation goes to the
node that owns the prefix's hash slot. Prefixes spread over the slots, one ledger per project.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from merlin_tracking import (
    InvalidRecordError,
    RunStatus,
    StoreRefusedError,
    StoreUnavailableError,
    TaskState,
    TrackingDatabase,
)
from merlin_tracking.records.events import TaskEvent
from merlin_tracking.records.events import TaskEventKind as K
from tests.support.cli import Cli, ok
from tests.support.redis_topologies import RedisClusterNodes


def prefix_on(cluster: RedisClusterNodes, node: int) -> str:
    """A fresh prefix whose slot is owned by ``node``."""
    while True:
        prefix = f"test_{uuid.uuid4().hex[:12]}"
        if cluster.owner_of("{" + prefix + "}") == node:
            return prefix


def through(cluster: RedisClusterNodes, node: int) -> str:
    """A cluster URL that names only ``node``: the client finds the others itself."""
    return f"redis+cluster://{cluster.addresses[node]}"


def test_every_operation_works_through_any_node(cluster: RedisClusterNodes) -> None:
    prefix = prefix_on(cluster, 2)
    writer = TrackingDatabase.from_url(through(cluster, 0), prefix=prefix)
    run = writer.runs.create("cluster-study", "/ws/cluster", ["q1", "q2"])
    writer.runs.record_events(
        [TaskEvent(run.id, f"t{i}", K.PUBLISHED, "q1", "sim") for i in range(5)]
    )
    writer.runs.record_events(
        [TaskEvent(run.id, f"t{i}", K.STARTED, worker="w@n") for i in range(5)]
        + [TaskEvent(run.id, f"t{i}", K.SUCCEEDED, worker="w@n") for i in range(4)]
        + [TaskEvent(run.id, "t4", K.FAILED, worker="w@n", error="ValueError: bad")]
    )
    for node in range(3):
        reader = TrackingDatabase.from_url(through(cluster, node), prefix=prefix)
        got = reader.runs.get(run.id)
        assert (got.tasks_succeeded, got.tasks_failed, got.status) == (4, 1, RunStatus.FAILED)
        assert reader.runs.get("/ws/cluster") == got
        assert [r.id for r in reader.runs.get_all({"study_id": got.study_id})] == [run.id]
        failed = reader.tasks.get_all({"run_id": run.id, "state": "FAILED"})
        assert [(t.id, t.state, t.error) for t in failed] == [
            ("t4", TaskState.FAILED, "ValueError: bad")
        ]
        info = reader.info()
        assert info["server"]["server"] == "redis" and info["url"].startswith("redis+cluster:")
    # Every key of the ledger sits on the node that owns the prefix's slot.
    owner = redis.Redis.from_url(cluster.node_url(2))
    others = [redis.Redis.from_url(cluster.node_url(n)) for n in (0, 1)]
    try:
        assert owner.keys("{" + prefix + "}*")
        assert all(not other.keys("{" + prefix + "}*") for other in others)
    finally:
        for client in (owner, *others):
            client.close()
    writer.studies.delete("cluster-study")  # cascades over the run and its tasks
    assert not TrackingDatabase.from_url(cluster.url, prefix=prefix).runs.get_all()


def test_prefixes_spread_over_the_cluster(cluster: RedisClusterNodes) -> None:
    """One ledger per project: each prefix lives on one node, the projects on all three."""
    prefixes = [prefix_on(cluster, node) for node in range(3)]
    for prefix in prefixes:
        db = TrackingDatabase.from_url(cluster.url, prefix=prefix)
        db.runs.create(f"project-{prefix}", f"/ws/{prefix}", ["q"])
    for node, prefix in enumerate(prefixes):
        client = redis.Redis.from_url(cluster.node_url(node))
        try:
            assert client.keys("{" + prefix + "}*")
        finally:
            client.close()
        db = TrackingDatabase.from_url(cluster.url, prefix=prefix)
        assert [s.name for s in db.studies.get_all()] == [f"project-{prefix}"]


def test_a_plain_url_to_a_node_that_does_not_own_the_slot_says_what_to_use(
    cluster: RedisClusterNodes,
) -> None:
    prefix = prefix_on(cluster, 1)
    db = TrackingDatabase.from_url(cluster.node_url(0), prefix=prefix)
    with pytest.raises(StoreRefusedError) as caught:
        db.runs.create("s", "/ws/moved", ["q"])
    assert caught.value.code == "MOVED"
    assert "redis+cluster://" in str(caught.value)


def test_the_cli_works_through_any_node(cluster: RedisClusterNodes) -> None:
    prefix = prefix_on(cluster, 0)
    TrackingDatabase.from_url(cluster.url, prefix=prefix).runs.create("cli", "/ws/cli", ["q"])
    for node in (1, 2):
        cli = Cli(through(cluster, node), prefix)
        listed = cli.json("runs", "list")["runs"]
        assert [run["workspace"] for run in listed] == ["/ws/cli"]
        assert "/ws/cli" in ok(cli("runs", "show", "/ws/cli"))
        assert '"server": "redis"' in ok(cli("info", "--json"))
        assert "cli" in ok(cli("studies", "list"))
        ok(cli("workers", "list"))
        ok(cli("gc"))
    # export, delete and import again, each through another node
    exported = ok(Cli(through(cluster, 1), prefix)("export", "/ws/cli"))
    ok(Cli(through(cluster, 2), prefix)("runs", "delete", "/ws/cli", "--yes"))
    assert Cli(through(cluster, 0), prefix).json("runs", "list")["runs"] == []
    ok(Cli(through(cluster, 0), prefix)("import", "-", input=exported))
    assert [r["workspace"] for r in Cli(cluster.url, prefix).json("runs", "list")["runs"]] == [
        "/ws/cli"
    ]


def test_a_cluster_with_no_reachable_node_is_an_outage(cluster: RedisClusterNodes) -> None:
    with pytest.raises(StoreUnavailableError):
        TrackingDatabase.from_url("redis+cluster://127.0.0.1:1", prefix="p").runs.get_all()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis+cluster://127.0.0.1:7000/3", "database 0 only"),
        ("redis+cluster://127.0.0.1/0", "is not a host:port"),
        ("redis+cluster://:pw@127.0.0.1:7000,nowhere/0", "'nowhere' is not a host:port"),
        ("redis+sentinel://127.0.0.1:26379", "no service name"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "is not a database number"),
    ],
)
def test_malformed_cluster_and_sentinel_urls_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        TrackingDatabase.from_url(url, prefix="p")
    assert fragment in str(caught.value)
    assert "pw@" not in str(caught.value)
