"""A Celery app for the ``celery -A tests.apps.cli_app tracking ...`` smoke tests.

CLI_APP_TRACKING_URL      ``tracking_url`` (also the broker, which the commands never use)
CLI_APP_TRACKING_PREFIX   ``tracking_prefix``, when set
"""

from __future__ import annotations

import os

from celery import Celery

URL = os.environ.get("CLI_APP_TRACKING_URL", "redis://127.0.0.1:6379/0")

app = Celery("cli_app")
app.conf.update(broker_url=URL, tracking_url=URL)
if os.environ.get("CLI_APP_TRACKING_PREFIX"):
    app.conf.tracking_prefix = os.environ["CLI_APP_TRACKING_PREFIX"]
