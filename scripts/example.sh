#!/usr/bin/env bash
# The main job: run the example study end to end.
#
#     bash scripts/example.sh [--redis URL] [--samples N]
#
# On a fresh machine with only Python 3 it installs the package, starts two real Celery workers
# (queues sim and post) on a broker that needs no server (kombu's filesystem transport), launches
# a tracked parameter sweep, shows its progress, prints the tracked run with its counters and its
# workers, and stops the workers. The ledger is an SQLite file ($MERLIN_TRACKING_DB, else
# ~/.local/share/merlin_tracking/tracking.db). With --redis URL, Redis is broker and ledger.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/common.sh
source scripts/common.sh

prepare_python ""
exec "$PYTHON" -m examples.parameter_sweep.run "$@"
