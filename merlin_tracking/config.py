"""Tracking settings, read from a Celery app's configuration the way Celery reads its own.

Settings live in ``app.conf`` under ``tracking_*``. Each can also come from the environment as
``MERLIN_TRACKING_<NAME>`` (``MERLIN_TRACKING_URL``, ``MERLIN_TRACKING_PREFIX``, ...), which wins
where both are set, so apps that cannot be edited can still be configured. ``MERLIN_TRACKING=0``
turns tracking off. The store defaults to the app's Redis result backend, else to an SQLite file
(``$MERLIN_TRACKING_DB`` or a per-user default). Bad values fail at start-up with a message
naming the setting; the run resolver named here is loaded (and checked) by ``install``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from merlin_tracking.errors import ConfigurationError, TrackingError
from merlin_tracking.resolvers import DEFAULT_RESOLVER, invalid_resolver
from merlin_tracking.stores.base import DEFAULT_PREFIX, check_prefix
from merlin_tracking.urls import (
    celery_sentinel_url,
    is_redis_url,
    is_store_url,
    mask_url,
    scheme_of,
    supported_schemes,
)

DISABLING_VALUES = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    enabled: bool
    url: str
    prefix: str = DEFAULT_PREFIX
    heartbeat_interval: float = 10.0
    stale_after: float = 60.0
    #: The resolver's name as configured; ``install`` loads it (``resolvers.load_resolver``).
    run_resolver: str = DEFAULT_RESOLVER
    # Seconds a run counted at workers (untracked publisher) waits after its last received task
    # before it may complete: its other tasks may still be on their way through the broker.
    settle_seconds: float = 10.0
    # Seconds the task records of a COMPLETED run are kept (None: for good; 0: dropped at
    # completion, the run's counters stay).
    task_retention: float | None = None
    # Keep each in-flight task's message (arguments included: an opt-in) until it finishes, so
    # that ``runs requeue --lost`` can publish a lost task again.
    keep_messages: bool = False
    # Seconds a store command may wait for the server (None: the store's default, 10 s).
    timeout: float | None = None
    # Seconds before its batch allocation's end at which a worker stops consuming new tasks,
    # so that the ones it runs may finish (None: never).
    drain_before_end: float | None = None

    @classmethod
    def from_app_conf(
        cls, conf: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> TrackingConfig:
        env = os.environ if environ is None else environ

        def setting(name: str) -> Any:
            from_env = env.get("MERLIN_" + name.upper())
            return from_env if from_env not in (None, "") else conf.get(name)

        enabled = _flag("tracking_enabled", setting("tracking_enabled"))
        if env.get("MERLIN_TRACKING", "").strip().lower() in DISABLING_VALUES:
            enabled = False
        url = (
            setting("tracking_url")
            or _redis_backend(conf.get("result_backend"), conf)
            or default_sqlite_url(env)
        )
        if not is_store_url(url):
            shown = repr(mask_url(url) if isinstance(url, str) else url)
            raise ConfigurationError(
                f"tracking_url: {shown} is not a supported store URL; use "
                f"{supported_schemes()} (sqlite:///path)"
            )
        prefix = setting("tracking_prefix") or DEFAULT_PREFIX
        try:
            check_prefix(prefix)
        except TrackingError as exc:
            raise ConfigurationError(f"tracking_prefix: {exc}") from None
        interval = _seconds(
            "tracking_heartbeat_interval", setting("tracking_heartbeat_interval"), 10.0
        )
        stale = _seconds(
            "tracking_stale_after", setting("tracking_stale_after"), max(60.0, 3 * interval)
        )
        if stale <= interval:
            raise ConfigurationError(
                f"tracking_stale_after ({stale:g} s) must be longer than "
                f"tracking_heartbeat_interval ({interval:g} s), or live workers would read as STALLED"
            )
        resolver = setting("tracking_run_resolver") or DEFAULT_RESOLVER
        if not isinstance(resolver, str):
            raise invalid_resolver(resolver, "expected a name or module:callable")
        settle = _seconds(
            "tracking_settle_seconds", setting("tracking_settle_seconds"), 10.0, zero_ok=True
        )
        retention_setting = setting("tracking_task_retention")
        retention = (
            None
            if retention_setting in (None, "")
            or str(retention_setting).strip().lower() == "forever"
            else _duration("tracking_task_retention", retention_setting)
        )
        timeout_setting = setting("tracking_timeout")
        timeout = (
            None
            if timeout_setting in (None, "")
            else _seconds("tracking_timeout", timeout_setting, 10.0)
        )
        drain_setting = setting("tracking_drain_before_end")
        drain_before_end = (
            None
            if drain_setting in (None, "")
            else _seconds("tracking_drain_before_end", drain_setting, 0.0)
        )
        keep = setting("tracking_keep_messages")
        keep_messages = False if keep is None else _flag("tracking_keep_messages", keep)
        return cls(
            enabled,
            url,
            prefix,
            interval,
            stale,
            resolver.strip(),
            settle,
            retention,
            keep_messages,
            timeout,
            drain_before_end,
        )


def default_sqlite_url(environ: Mapping[str, str] | None = None) -> str:
    """``sqlite:///`` URL of ``$MERLIN_TRACKING_DB``, else of a file in the user's data folder."""
    env = os.environ if environ is None else environ
    path = env.get("MERLIN_TRACKING_DB")
    if not path:
        data_home = env.get("XDG_DATA_HOME") or os.path.join(
            os.path.expanduser("~"), ".local", "share"
        )
        folder = os.path.join(data_home, "merlin_tracking")
        try:
            os.makedirs(folder, exist_ok=True)  # our own per-user folder: made on first use
        except OSError:
            pass  # the store names the unusable path when it is opened
        path = os.path.join(folder, "tracking.db")
    return "sqlite:///" + os.path.abspath(path)


def _redis_backend(backend: Any, conf: Mapping[str, Any]) -> str | None:
    """The ledger URL of a Redis result backend: the backend's own URL, or for Celery's
    Sentinel backend (``sentinel://host:port[/db];sentinel://...`` with the master's name in
    ``result_backend_transport_options``) the same servers as ``redis+sentinel://``."""
    if is_redis_url(backend):
        return str(backend)
    if not isinstance(backend, str) or scheme_of(backend) != "sentinel":
        return None
    options = conf.get("result_backend_transport_options") or {}
    service = options.get("master_name") if isinstance(options, Mapping) else None
    if not service:
        return None  # Celery itself refuses this backend: it names no master
    auth = options.get("sentinel_kwargs")
    return celery_sentinel_url(backend, str(service), auth if isinstance(auth, Mapping) else None)


def _flag(name: str, value: Any) -> bool:
    if value is None:
        return True
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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _duration(name: str, value: Any) -> float:
    """Seconds of a number or of ``30d``-style text (s, m, h, d, w); zero allowed."""
    text = str(value).strip().lower()
    unit = text[-1:] if text[-1:] in _UNITS else "s"
    number = text[:-1] if text[-1:] in _UNITS else text
    try:
        seconds = _seconds(name, number, 0.0, zero_ok=True) * _UNITS[unit]
    except ConfigurationError:
        raise ConfigurationError(
            f"{name}: expected seconds or a duration such as 12h or 30d (0: drop task records at "
            f"completion; forever or unset: keep them), got {value!r}"
        ) from None
    return seconds


def _seconds(name: str, value: Any, default: float, zero_ok: bool = False) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name}: expected a number of seconds, got {value!r}") from None
    low_ok = seconds >= 0 if zero_ok else seconds > 0
    if not low_ok or seconds != seconds or seconds == float("inf"):
        kind = "zero or a positive" if zero_ok else "a positive"
        raise ConfigurationError(f"{name}: must be {kind} number of seconds, got {value!r}")
    return seconds


__all__ = ["DEFAULT_RESOLVER", "ConfigurationError", "TrackingConfig", "default_sqlite_url"]
