"""Tracking settings: app.conf, environment overrides, defaults and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from merlin_tracking.config import ConfigurationError, TrackingConfig, default_sqlite_url


def config(conf: dict[str, object], env: dict[str, str] | None = None) -> TrackingConfig:
    return TrackingConfig.from_app_conf(conf, env or {})


def test_defaults_follow_a_redis_result_backend() -> None:
    result = config({"result_backend": "rediss://:pw@cache:6380/2"})
    assert result.enabled is True
    assert result.url == "rediss://:pw@cache:6380/2"
    assert result.prefix == "merlin_tracking"
    assert result.heartbeat_interval == 10.0
    assert result.stale_after == 60.0
    assert result.settle_seconds == 10.0


def test_without_redis_the_store_is_a_per_user_sqlite_file(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "alice")}
    assert config({"result_backend": "rpc://"}, env).url == (
        f"sqlite:///{tmp_path}/alice/merlin_tracking/tracking.db"
    )
    assert (tmp_path / "alice" / "merlin_tracking").is_dir()  # made on first use
    env["MERLIN_TRACKING_DB"] = "/scratch/ledger.db"
    assert config({}, env).url == "sqlite:////scratch/ledger.db"
    assert default_sqlite_url(env) == "sqlite:////scratch/ledger.db"


def test_explicit_settings_and_environment_overrides() -> None:
    conf = {
        "result_backend": "redis://a/0",
        "tracking_url": "redis://b/1",
        "tracking_prefix": "lab",
        "tracking_heartbeat_interval": 2,
        "tracking_stale_after": "7.5",
    }
    assert config(conf) == TrackingConfig(True, "redis://b/1", "lab", 2.0, 7.5)
    env = {"MERLIN_TRACKING_URL": "redis://c/3", "MERLIN_TRACKING_PREFIX": "env"}
    overridden = config(conf, env)
    assert (overridden.url, overridden.prefix) == ("redis://c/3", "env")
    settle = {**conf, "tracking_settle_seconds": 30}
    assert config(settle).settle_seconds == 30.0
    assert config(settle, {"MERLIN_TRACKING_SETTLE_SECONDS": "0"}).settle_seconds == 0.0


@pytest.mark.parametrize(
    ("conf", "env"),
    [
        ({"tracking_enabled": False}, {}),
        ({"tracking_enabled": "off"}, {}),
        ({}, {"MERLIN_TRACKING": "0"}),
        ({"tracking_enabled": True}, {"MERLIN_TRACKING": "false"}),
        ({}, {"MERLIN_TRACKING_ENABLED": "no"}),
    ],
)
def test_opt_out(conf: dict[str, object], env: dict[str, str]) -> None:
    assert config({"result_backend": "redis://x/0", **conf}, env).enabled is False


@pytest.mark.parametrize(
    ("conf", "setting"),
    [
        ({"tracking_url": "amqp://guest@localhost//"}, "tracking_url"),
        ({"tracking_prefix": "has space"}, "tracking_prefix"),
        ({"tracking_heartbeat_interval": "abc"}, "tracking_heartbeat_interval"),
        ({"tracking_heartbeat_interval": 0}, "tracking_heartbeat_interval"),
        ({"tracking_stale_after": -1}, "tracking_stale_after"),
        ({"tracking_heartbeat_interval": 10, "tracking_stale_after": 5}, "tracking_stale_after"),
        ({"tracking_enabled": "maybe"}, "tracking_enabled"),
        ({"tracking_settle_seconds": -1}, "tracking_settle_seconds"),
        ({"tracking_settle_seconds": "soon"}, "tracking_settle_seconds"),
        ({"tracking_task_retention": "a while"}, "tracking_task_retention"),
        ({"tracking_task_retention": "-3d"}, "tracking_task_retention"),
        ({"tracking_keep_messages": "perhaps"}, "tracking_keep_messages"),
    ],
)
def test_bad_values_name_the_setting(conf: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        config({"result_backend": "redis://x/0", **conf})


def test_task_retention_and_kept_messages() -> None:
    base = {"result_backend": "redis://x/0"}
    assert (config(base).task_retention, config(base).keep_messages) == (None, False)
    assert config({**base, "tracking_task_retention": "30d"}).task_retention == 30 * 86_400
    assert config({**base, "tracking_task_retention": 3600}).task_retention == 3600.0
    assert config({**base, "tracking_task_retention": "0"}).task_retention == 0.0
    assert config({**base, "tracking_task_retention": "forever"}).task_retention is None
    env = {"MERLIN_TRACKING_TASK_RETENTION": "12h", "MERLIN_TRACKING_KEEP_MESSAGES": "yes"}
    from_env = config(base, env)
    assert (from_env.task_retention, from_env.keep_messages) == (43_200.0, True)
    assert config({**base, "tracking_keep_messages": True}).keep_messages is True


def test_the_worker_start_up_line_says_what_is_tracked() -> None:
    from merlin_tracking.resolvers import load_resolver
    from merlin_tracking.signals.tracker import Tracker
    from merlin_tracking.signals.worker import describe

    settings = config({"result_backend": "redis://:secret@host:6379/0"})
    line = describe(Tracker(settings, resolver=load_resolver(settings.run_resolver)))
    assert "secret" not in line and "redis://:***@host:6379/0" in line
    assert "resolver 'auto'" in line and "Merlin" in line and "run headers" in line
