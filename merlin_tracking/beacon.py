"""The heartbeat beacon: a small process that beats for a worker while the worker exists.

A worker's liveness must not depend on its own Python threads being scheduled: a task that holds
the GIL (a long C call) would starve a heartbeat thread and the worker would read STALLED while
alive. So the worker bootstep starts this process (``python -m merlin_tracking.beacon``) and
hands it the store, the physical worker id and the interval on its stdin (one JSON line: the
store URL may hold a password, which must not show in a process listing). Every interval it
records a heartbeat and applies what time made due in the ledger (``catch_up``: stale workers'
tasks LOST, settled runs COMPLETED), both in one call (``TrackingStore.beat``), the catch-up at
most once a second for the whole ledger however many beacons beat. It exits as soon as its worker does: stdin closes when the
worker exits or is killed (SIGKILL, OOM), and it also checks that its parent is still the
worker. It imports no Celery, so it costs little memory.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import time
from datetime import datetime, timezone

from merlin_tracking.errors import StoreUnavailableError
from merlin_tracking.stores import open_store

logger = logging.getLogger("merlin_tracking.beacon")


def run(url: str, prefix: str, worker_id: str, interval: float, parent: int, stdin_fd: int) -> None:
    store = open_store(url, prefix=prefix)
    warned = False
    next_beat = 0.0
    while True:
        wait = max(0.0, next_beat - time.monotonic())
        readable, _, _ = select.select([stdin_fd], [], [], wait)
        if readable and not os.read(stdin_fd, 4096):
            return  # the worker closed the pipe: it stopped, or it is gone
        if os.getppid() != parent:
            return  # the worker died and this process was handed to init
        if time.monotonic() < next_beat:
            continue
        next_beat = time.monotonic() + interval
        try:
            if not store.beat(worker_id, datetime.now(timezone.utc)):
                return  # the record was deleted: the worker re-registers and starts a new one
            if warned:
                logger.warning("merlin_tracking beacon: store reachable again")
                warned = False
        except StoreUnavailableError as exc:
            if not warned:
                logger.warning("merlin_tracking beacon: heartbeat failed: %s", exc)
                warned = True
        except Exception:  # a bug must not end the beats: log it and go on
            logger.exception("merlin_tracking beacon: heartbeat failed")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    line = sys.stdin.buffer.readline()
    if not line:
        return
    config = json.loads(line)
    run(
        str(config["url"]),
        str(config["prefix"]),
        str(config["worker_id"]),
        float(config["interval"]),
        int(config["parent"]),
        sys.stdin.fileno(),
    )


if __name__ == "__main__":
    main()
