#!/usr/bin/env bash
# Shared by scripts/test.sh, lint.sh and example.sh: the interpreter and virtualenv settings,
# logging, Debian packages without starting services, and the project's virtualenv (.venv, made
# and installed once, reused while pyproject.toml is unchanged). Source it from the repository
# root.

PYTHON="${PYTHON:-python3}"
VENV="${MERLIN_TRACKING_VENV:-$PWD/.venv}"
STAMP="$VENV/.merlin_tracking-installed"
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

# The project's own virtualenv: made once from $PYTHON, then reused. Its stamp records what was
# installed into it and for which project files, so a rerun on an unchanged project neither
# reinstalls nor needs the package index (offline after the first run).
# The virtualenv runs, and on the Python version of $PYTHON (a changed PYTHON makes it anew).
venv_python_works() {
    local version='import sys; print(sys.version_info[:2])'
    [ -x "$VENV/bin/python" ] &&
        [ "$("$VENV/bin/python" -c "$version" 2>/dev/null)" = "$("$PYTHON" -c "$version")" ]
}

# What an install depends on: the project's metadata, its version and the interpreter.
install_hash() {
    {
        cat pyproject.toml merlin_tracking/version.py
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

# stamp_covers EXTRAS: the stamp is for these project files and installed EXTRAS or more
# ("[dev]" includes "[test]", which includes "").
stamp_covers() {
    local wanted="$1" hash extras
    [ -f "$STAMP" ] || return 1
    read -r hash extras <"$STAMP" || true
    [ "$hash" = "$(install_hash)" ] || return 1
    case "$wanted|${extras:-}" in
        "|"* | "[test]|[test]" | "[test]|[dev]" | "[dev]|[dev]") return 0 ;;
        *) [ "$wanted" = "${extras:-}" ] ;;
    esac
}

# prepare_python EXTRAS: point $PYTHON at the project's virtualenv ($VENV), with the package
# installed in editable mode with EXTRAS (e.g. "[test]", or "" for none), and put its bin/
# first on PATH (merlin-tracking, celery).
prepare_python() {
    local extras="$1"
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    if ! venv_python_works; then
        if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
            apt_install python3-venv
        fi
        if [ -e "$VENV" ] && [ ! -e "$VENV/pyvenv.cfg" ] && [ -n "$(ls -A "$VENV")" ]; then
            log "$VENV is not a virtualenv and not empty: set MERLIN_TRACKING_VENV elsewhere"
            return 1
        fi
        log "making the project's virtualenv in $VENV"
        "$PYTHON" -m venv --clear "$VENV"
    fi
    PYTHON="$VENV/bin/python"
    export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
    if stamp_covers "$extras"; then
        return 0
    fi
    log "installing the package into $VENV (the first time needs the package index)"
    rm -f "$STAMP"
    if ! "$PYTHON" -m pip install -q -e ".${extras}"; then
        log "pip install failed: the first install needs the package index (PyPI, or" \
            "PIP_INDEX_URL / PIP_FIND_LINKS with the wheels); later runs reuse $VENV offline"
        return 1
    fi
    printf '%s %s\n' "$(install_hash)" "$extras" >"$STAMP"
}
