#!/bin/sh
# Install Debian's chromium for the viewer's browser test (tests/viewer/test_browser.py).
# Idempotent and quiet on success: does nothing when /usr/bin/chromium exists; runs
# `apt-get update` only when the package cannot be installed from the current lists.
set -eu

CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-browser: need root or sudo to install chromium" >&2; exit 1; }
    SUDO="sudo"
fi

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
install() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >"$LOG" 2>&1
}
if ! install; then
    $SUDO apt-get update -qq >"$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
    install || { cat "$LOG" >&2; exit 1; }
fi
[ -x "$CHROMIUM" ] || { echo "install-browser: $CHROMIUM missing after install" >&2; exit 1; }
