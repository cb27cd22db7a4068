"""The ``celery tracking`` sub-command (the ``merlin-tracking`` group) and the drop-in hook.

Celery imports every ``celery.commands`` entry point at the start of each ``celery ...``
command. Importing this module therefore connects a ``worker_init`` receiver, which runs
before a worker builds its bootsteps: every worker started with the ``celery`` command is
tracked without a line in the user's app. Opt out with ``tracking_enabled = False`` in the app
configuration or ``MERLIN_TRACKING=0`` in the environment.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import signals

from merlin_tracking.cli.main import cli


def _install_on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    from merlin_tracking.errors import ConfigurationError
    from merlin_tracking.signals import install

    try:
        install(app)
    except ConfigurationError as exc:
        # Celery swallows exceptions raised by signal receivers; SystemExit gets through, so a
        # bad tracking_* setting stops the worker at start-up with the setting named.
        sys.stderr.write(f"merlin_tracking: {exc}\n")
        raise SystemExit(78) from None


signals.worker_init.connect(_install_on_worker_init, weak=False, dispatch_uid="merlin_tracking")


# ``celery -A APP tracking ...`` is the ``merlin-tracking`` command group; the app's
# tracking_url and tracking_prefix are its default store (see merlin_tracking.cli).
tracking = cli
