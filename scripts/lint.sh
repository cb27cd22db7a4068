#!/usr/bin/env bash
# Lint, format and type checks (CI runs them after the tests):
#
#     bash scripts/lint.sh
#
# ruff check, ruff format --check and strict mypy on the package, with the versions the
# project's "dev" extra installs today (into the same Python scripts/test.sh uses).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/common.sh
source scripts/common.sh

prepare_python "[dev]"

status=0
log "ruff check"
"$PYTHON" -m ruff check . || status=1
log "ruff format --check"
"$PYTHON" -m ruff format --check . || status=1
log "mypy (strict) on merlin_tracking"
"$PYTHON" -m mypy merlin_tracking || status=1
exit "$status"
