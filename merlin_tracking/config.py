"""Tracking settings, read from a Celery app's configuration the way Celery reads its own.

Settings live in ``app.conf`` under ``tracking_*``; ``MERLIN_TRACKING=0`` in the environment
turns tracking off. Bad values fail at start-up with a message naming the setting.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from merlin_tracking.errors import TrackingError
from merlin_tracking.stores.redis.keys import DEFAULT_PREFIX, tagged_prefix

REDIS_SCHEMES = ("redis", "rediss", "unix")
DISABLING_VALUES = ("0", "false", "no", "off")


class ConfigurationError(TrackingError, ValueError):
    """A ``tracking_*`` setting has a value that cannot work."""


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    enabled: bool
    url: str | None
    prefix: str = DEFAULT_PREFIX
    heartbeat_interval: float = 10.0
    stale_after: float = 60.0

    @classmethod
    def from_app_conf(
        cls, conf: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> TrackingConfig:
        env = os.environ if environ is None else environ
        enabled = _flag("tracking_enabled", conf.get("tracking_enabled", True))
        if env.get("MERLIN_TRACKING", "").strip().lower() in DISABLING_VALUES:
            enabled = False
        url = conf.get("tracking_url") or _redis_backend(conf.get("result_backend"))
        if url is not None and (
            not isinstance(url, str) or urlsplit(url).scheme not in REDIS_SCHEMES
        ):
            raise ConfigurationError(
                f"tracking_url: {url!r} is not a Redis URL; use redis://, rediss:// or unix://"
            )
        prefix = conf.get("tracking_prefix") or DEFAULT_PREFIX
        try:
            tagged_prefix(prefix)
        except TrackingError as exc:
            raise ConfigurationError(f"tracking_prefix: {exc}") from None
        interval = _seconds(
            "tracking_heartbeat_interval", conf.get("tracking_heartbeat_interval"), 10.0
        )
        stale = _seconds(
            "tracking_stale_after", conf.get("tracking_stale_after"), max(60.0, 3 * interval)
        )
        if stale <= interval:
            raise ConfigurationError(
                f"tracking_stale_after ({stale:g} s) must be longer than "
                f"tracking_heartbeat_interval ({interval:g} s), or live workers would read as STALLED"
            )
        return cls(enabled, url, prefix, interval, stale)


def _redis_backend(backend: Any) -> str | None:
    if isinstance(backend, str) and urlsplit(backend).scheme in REDIS_SCHEMES:
        return backend
    return None


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
        *DISABLING_VALUES,
    ):
        return value.strip().lower() not in DISABLING_VALUES
    raise ConfigurationError(f"{name}: expected true or false, got {value!r}")


def _seconds(name: str, value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name}: expected a number of seconds, got {value!r}") from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ConfigurationError(f"{name}: must be a positive number of seconds, got {value!r}")
    return seconds
