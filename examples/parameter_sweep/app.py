"""The Celery app of the example study, configured from the environment.

``SWEEP_BROKER_URL`` / ``SWEEP_RESULT_BACKEND`` choose the broker and result backend; with
neither set, everything lives in files under ``SWEEP_STATE_DIR`` (kombu's filesystem transport
and Celery's filesystem result backend), so the example needs no server at all. The tracking
store comes from ``MERLIN_TRACKING_URL`` (Redis) or ``MERLIN_TRACKING_DB`` (SQLite file).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from celery import Celery

STATE_DIR = Path(os.environ.get("SWEEP_STATE_DIR", "/tmp/merlin-tracking-sweep"))


def _broker_settings() -> dict[str, object]:
    url = os.environ.get("SWEEP_BROKER_URL")
    if url:
        return {"broker_url": url}
    messages = STATE_DIR / "broker"
    messages.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(messages),
            "data_folder_out": str(messages),
            "control_folder": str(STATE_DIR / "control"),
            "polling_interval": 0.05,
        },
    }


app = Celery("parameter_sweep")
app.conf.update(
    _broker_settings(),
    result_backend=os.environ.get("SWEEP_RESULT_BACKEND") or f"file://{STATE_DIR / 'results'}",
    task_routes={
        "parameter_sweep.simulate": {"queue": "sim"},
        "parameter_sweep.aggregate": {"queue": "post"},
    },
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    tracking_heartbeat_interval=2,
    tracking_stale_after=10,
)
if os.environ.get("MERLIN_TRACKING_URL"):
    app.conf.tracking_url = os.environ["MERLIN_TRACKING_URL"]
(STATE_DIR / "results").mkdir(parents=True, exist_ok=True)


@app.task(name="parameter_sweep.simulate")
def simulate(sample: dict[str, float], steps: int = 20_000) -> dict[str, float]:
    """Integrate a damped, driven oscillator; report the steady-state amplitude."""
    damping, drive = sample["damping"], sample["drive"]
    dt, position, velocity, peak = 1e-3, 0.0, 0.0, 0.0
    for step in range(steps):
        force = math.cos(drive * step * dt) - damping * velocity - position
        velocity += force * dt
        position += velocity * dt
        if step > steps // 2:
            peak = max(peak, abs(position))
    return {**sample, "amplitude": peak}


@app.task(name="parameter_sweep.aggregate")
def aggregate(results: list[dict[str, float]]) -> dict[str, object]:
    """Pick the resonance: the sample with the largest amplitude."""
    best = max(results, key=lambda result: result["amplitude"])
    return {"samples": len(results), "best": best}
