"""Run the application with uvicorn, and say what is unsafe about where it listens."""

from __future__ import annotations

from merlin_tracking.web.api import Settings
from merlin_tracking.web.security import is_loopback


def exposure_warning(host: str, settings: Settings) -> str | None:
    """The warning for a server reachable from other machines without a token."""
    if is_loopback(host) or settings.policy.token:
        return None
    return (
        f"warning: listening on {host}, reachable from other machines, with no token: anyone "
        "who can reach it reads the ledger (give --token or MERLIN_TRACKING_TOKEN, or bind "
        "127.0.0.1 and use an SSH tunnel)"
    )


def run(settings: Settings, host: str, port: int, log_level: str = "warning") -> None:
    """Serve until interrupted (uvicorn handles SIGINT and SIGTERM)."""
    import uvicorn

    from merlin_tracking.web.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        server_header=False,
    )
