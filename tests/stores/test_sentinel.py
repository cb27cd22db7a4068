"""A ledger on a Sentinel-managed master: a real master, replica and Sentinel on loopback.

Failover with workers running is in ``tests/celery/test_topologies.py``; here the URL forms,
what a reader sees, and the errors of a wrong service name or a URL to the replica.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from merlin_tracking import StoreRefusedError, StoreUnavailableError, TrackingDatabase
from merlin_tracking.config import TrackingConfig
from tests.support.redis_topologies import RedisSentinelGroup, running

PASSWORD = "Sentinel-pw-42"


@pytest.fixture(scope="module")
def sentinels() -> Iterator[RedisSentinelGroup]:
    yield from running(RedisSentinelGroup(password=PASSWORD), "a master, replica and Sentinel")


def test_the_service_name_finds_the_master(sentinels: RedisSentinelGroup, prefix: str) -> None:
    db = TrackingDatabase.from_url(sentinels.url, prefix=prefix)
    run = db.runs.create("sentinel", "/ws/sentinel", ["q"])
    on_master = TrackingDatabase.from_url(sentinels.master.url, prefix=prefix)
    assert on_master.runs.get(run.id) == run
    info = db.info()
    assert info["url"].startswith("redis+sentinel://:***@127.0.0.1")
    assert PASSWORD not in str(info)
    # Listing the Sentinel twice (a dead one first) still finds the master.
    dead_first = sentinels.url.replace("@127.0.0.1:", "@127.0.0.1:1,127.0.0.1:", 1)
    assert TrackingDatabase.from_url(dead_first, prefix=prefix).runs.get(run.id) == run


def test_an_unknown_service_is_an_outage_that_names_it(
    sentinels: RedisSentinelGroup, prefix: str
) -> None:
    url = sentinels.url.replace(f"/{sentinels.service}/", "/no-such-service/")
    with pytest.raises(StoreUnavailableError) as caught:
        TrackingDatabase.from_url(url, prefix=prefix).runs.get_all()
    assert "no-such-service" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_url_to_the_replica_says_to_use_the_master(
    sentinels: RedisSentinelGroup, prefix: str
) -> None:
    with pytest.raises(StoreRefusedError) as caught:
        TrackingDatabase.from_url(sentinels.replica.url, prefix=prefix).runs.create(
            "s", "/ws/replica", ["q"]
        )
    assert caught.value.code == "READONLY"
    assert "master" in str(caught.value)


def test_celerys_sentinel_backend_is_the_default_ledger(
    sentinels: RedisSentinelGroup, prefix: str
) -> None:
    """``sentinel://...;sentinel://...`` with ``master_name``, as Celery users configure their
    result backend, becomes the ledger URL with no tracking setting."""
    port = sentinels.sentinel_port
    backend = f"sentinel://:{PASSWORD}@127.0.0.1:1/0;sentinel://:{PASSWORD}@127.0.0.1:{port}/0"
    config = TrackingConfig.from_app_conf(
        {
            "result_backend": backend,
            "result_backend_transport_options": {"master_name": sentinels.service},
        },
        environ={},
    )
    assert config.url == (
        f"redis+sentinel://:{PASSWORD}@127.0.0.1:1,127.0.0.1:{port}/{sentinels.service}/0"
    )
    db = TrackingDatabase.from_url(config.url, prefix=prefix)
    assert db.runs.create("celery-style", "/ws/celery-style", ["q"]).status.value == "INITIALIZED"
    # Without a master name Celery refuses the backend itself; the ledger falls back to SQLite.
    plain = TrackingConfig.from_app_conf({"result_backend": backend}, environ={})
    assert plain.url.startswith("sqlite:///")
