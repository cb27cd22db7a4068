#!/usr/bin/env bash
# The project's one test command:
#
#     bash scripts/test.sh [pytest arguments...]
#
# It works on a fresh Debian machine that has nothing but Python 3:
#   1. redis-server is installed from Debian's packages when it is not on PATH. The tests start
#      their own private redis-server on a free port (tests/conftest.py); nothing here starts,
#      needs or touches a system Redis on 127.0.0.1:6379.
#   2. RabbitMQ is installed when missing and started unless it answers on 127.0.0.1:5672: the
#      signal-hook tests also run Celery on an AMQP broker (skip with
#      MERLIN_TRACKING_NEED_RABBITMQ=0; those tests are then skipped).
#   3. chromium (Debian's, driven by Playwright from PyPI for the web pages' tests) and openssl
#      (throwaway CAs of the TLS tests) are installed when missing (skip the browser with
#      MERLIN_TRACKING_NEED_BROWSER=0; its tests are then skipped). Nothing is downloaded at
#      run time: `playwright install` is never run. Debian's slurm-wlm and munge are installed
#      when missing, for the real single-node SLURM test, which starts its own daemons on
#      loopback (skip with MERLIN_TRACKING_NEED_SLURM=0; that test is then skipped).
#   4. The package is installed in editable mode with its test extras, into the project's
#      virtualenv (.venv), once: reruns reuse it, offline, while pyproject.toml is unchanged.
#   5. pytest runs with the given arguments. "No tests collected" (exit 5) is a failure too.
#
# Environment:
#   PYTHON                         interpreter the virtualenv is made from (default: python3)
#   MERLIN_TRACKING_NEED_RABBITMQ  0: do not install or start RabbitMQ (default: 1)
#   MERLIN_TRACKING_NEED_BROWSER   0: do not install chromium (default: 1)
#   MERLIN_TRACKING_NEED_SLURM     0: do not install slurm-wlm and munge (default: 1)
#   MERLIN_TRACKING_VENV           the virtualenv to make and use (default: .venv here)
#   MERLIN_TRACKING_TEST_REDIS_URL use this disposable Redis instead of a private server
#                                  (read by tests/conftest.py)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

NEED_RABBITMQ="${MERLIN_TRACKING_NEED_RABBITMQ:-1}"
NEED_BROWSER="${MERLIN_TRACKING_NEED_BROWSER:-1}"
NEED_SLURM="${MERLIN_TRACKING_NEED_SLURM:-1}"

# shellcheck source=scripts/common.sh
source scripts/common.sh

# ------------------------------------------------------------------------------ Redis
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || {
        log "redis-server is still not on PATH after installing it"
        exit 1
    }
fi

# ------------------------------------------------------------------------------ RabbitMQ
# The AMQP path of the signal hooks is tested against a real RabbitMQ.
rabbitmq_bin() {
    command -v rabbitmq-server 2>/dev/null && return 0
    [ -x /usr/sbin/rabbitmq-server ] && echo /usr/sbin/rabbitmq-server
}
rabbitmq_answers() {
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null
}
if [ "$NEED_RABBITMQ" = 1 ]; then
    RABBITMQ_SERVER="$(rabbitmq_bin || true)"
    if [ -z "$RABBITMQ_SERVER" ]; then
        apt_install rabbitmq-server
        RABBITMQ_SERVER="$(rabbitmq_bin)"
    fi
    if ! rabbitmq_answers; then
        log "starting RabbitMQ ($RABBITMQ_SERVER -detached)"
        as_root "$RABBITMQ_SERVER" -detached
        for _ in $(seq 60); do
            rabbitmq_answers && break
            sleep 1
        done
        rabbitmq_answers || {
            log "RabbitMQ did not answer on 127.0.0.1:5672 within 60 s"
            exit 1
        }
    fi
    log "RabbitMQ answers on 127.0.0.1:5672"
fi

# ------------------------------------------------------------------------------ browser, openssl
if [ "$NEED_BROWSER" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
fi
if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl
fi
if [ "$NEED_SLURM" = 1 ] && ! command -v slurmctld >/dev/null 2>&1; then
    # Best effort: without it the SLURM test is skipped, saying why.
    apt_install slurm-wlm munge || log "slurm-wlm could not be installed: its test will be skipped"
fi

# ------------------------------------------------------------------------------ Python
prepare_python "[test]"

# ------------------------------------------------------------------------------ tests
status=0
"$PYTHON" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    log "pytest collected no tests: that is a failure"
fi
exit "$status"
