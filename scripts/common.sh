#!/usr/bin/env bash
# Shared by scripts/test.sh, lint.sh and example.sh: the interpreter and virtualenv settings,
# logging, Debian packages without starting services, and a Python that can pip-install the
# project. Source it from the repository root.

PYTHON="${PYTHON:-python3}"
VENV="${MERLIN_TRACKING_VENV:-${HOME:-/root}/.cache/merlin_tracking/venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root or sudo to run: $*"
        return 1
    fi
}

# Install Debian packages without letting their maintainer scripts start system services: a
# temporary policy-rc.d answers "not allowed" (101) unless the machine already has one.
APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found: install $* yourself, then run this again"
        return 1
    fi
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        made_policy=1
    fi
    local status=0
    {
        if [ "$APT_UPDATED" -eq 0 ]; then
            log "apt-get update"
            as_root apt-get update -qq && APT_UPDATED=1
        fi
        log "apt-get install $*"
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    } || status=$?
    if [ "$made_policy" -eq 1 ]; then
        as_root rm -f "$policy"
    fi
    return "$status"
}

# A distribution's own Python (PEP 668) or one without pip cannot install the package by
# itself: use a virtualenv made from it instead.
can_pip_install() {
    "$1" -m pip --version >/dev/null 2>&1 || return 1
    "$1" - <<'PY'
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if in_venv or not managed else 1)
PY
}

# prepare_python EXTRAS: point $PYTHON at an interpreter that has the package installed in
# editable mode with EXTRAS (e.g. "[test]", or "" for none).
prepare_python() {
    local extras="$1"
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    if ! can_pip_install "$PYTHON"; then
        if [ ! -x "$VENV/bin/python" ]; then
            if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
                apt_install python3-venv
            fi
            log "making a virtualenv in $VENV"
            "$PYTHON" -m venv "$VENV"
        fi
        PYTHON="$VENV/bin/python"
    fi

    log "installing the package ($PYTHON)"
    "$PYTHON" -m pip install -q -e ".${extras}"
}
