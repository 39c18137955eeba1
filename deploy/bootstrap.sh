#!/usr/bin/env bash
# Set up a Debian / Raspberry Pi OS machine for phonewatch: system packages via apt (only the
# missing ones), then a Python venv with the project installed from pyproject.toml, pinned by
# deploy/constraints.txt (except on a Pi; see below).
# Idempotent: a second run only checks. Called by `make bootstrap` (and so by demo and test),
# `make install-unit` and `make install-controlroom`.
#
#   bootstrap.sh [dev|unit|controlroom]     (default dev; or PROFILE=...)
#
#   dev          what `make demo/test/check` need: APT_PACKAGES and phonewatch[EXTRAS] (EXTRAS
#                defaults to dev: pytest, ruff, mypy, ansible, ...)
#   unit         a camera unit: phonewatch with no extras (runtime only, no dev tools, no
#                broker); apt: python3-venv, and python3-picamera2 on a Pi
#   controlroom  the receiver and dashboard: phonewatch[controlroom]; apt: python3-venv and the
#                broker (mosquitto, mosquitto-clients)
#
# DRY_RUN=1 prints what it would install (every apt package the profile wants, then the pip
# command) and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${1:-${PROFILE:-dev}}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-}"
VENV=.venv
on_pi=false
if [ -n "${ON_PI+set}" ]; then on_pi=$ON_PI  # ON_PI=true|false overrides the detection
elif grep -qs "Raspberry Pi" /proc/device-tree/model; then on_pi=true; fi
case "$PROFILE" in
dev)
    EXTRAS="${EXTRAS:-dev}"
    APT_PACKAGES="${APT_PACKAGES:-}"
    ;;
unit)
    EXTRAS=""
    APT_PACKAGES="python3-venv"
    # picamera2 and libcamera come from apt only (Raspberry Pi's archive): the venv sees them.
    if $on_pi; then APT_PACKAGES+=" python3-picamera2"; fi
    ;;
controlroom)
    EXTRAS="controlroom"
    APT_PACKAGES="python3-venv mosquitto mosquitto-clients"
    ;;
*)
    echo "bootstrap: unknown profile '$PROFILE' (dev, unit or controlroom)" >&2
    exit 2
    ;;
esac
target="."
[ -z "$EXTRAS" ] || target=".[$EXTRAS]"
# The lock (exact versions of everything in the dev/CI venv). Not on a Pi: there the venv sees
# apt's picamera2, built against apt's numpy, which a pinned numpy from PyPI would shadow (the
# numpy and opencv markers in pyproject.toml keep a Pi's resolution on apt's numpy); and the
# lock was made on x86_64. CONSTRAINTS= (empty) installs unpinned anywhere.
if [ -z "${CONSTRAINTS+set}" ]; then
    if $on_pi; then CONSTRAINTS=""; else CONSTRAINTS=deploy/constraints.txt; fi
fi

if [ -n "$DRY_RUN" ]; then
    echo "bootstrap: profile $PROFILE (dry run: nothing is installed)"
    echo "apt: ${APT_PACKAGES:-(none)}"
    echo "venv: $VENV$($on_pi && echo ' --system-site-packages')"
    echo "pip: install -e $target${CONSTRAINTS:+ -c $CONSTRAINTS}"
    exit 0
fi

sudo_cmd() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in $APT_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=("python3-venv")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing system packages: ${missing[*]}"
    sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: phonewatch needs Python >= 3.11 ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    venv_args=()
    # On a Raspberry Pi, picamera2 and libcamera come from apt: let the venv see them.
    if $on_pi; then
        venv_args+=(--system-site-packages)
    fi
    echo "bootstrap: creating $VENV ${venv_args[*]:-}"
    "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
fi

# Re-install when pyproject.toml or the lock is newer than the last install of these extras.
stamp="$VENV/.installed-$(echo "${EXTRAS:-none}" | tr ',' '-')"
pin_args=()
[ -z "$CONSTRAINTS" ] || pin_args=(-c "$CONSTRAINTS")
stale=false
for dep in pyproject.toml $CONSTRAINTS; do
    if [ "$dep" -nt "$stamp" ]; then stale=true; fi
done
if [ ! -f "$stamp" ] || $stale; then
    echo "bootstrap: installing phonewatch$([ -z "$EXTRAS" ] || echo "[$EXTRAS]") into $VENV${CONSTRAINTS:+ (pinned by $CONSTRAINTS)}"
    "$VENV/bin/python" -m pip install -q --upgrade pip "${pin_args[@]}"
    "$VENV/bin/python" -m pip install -q -e "$target" "${pin_args[@]}"
    touch "$stamp"
fi
