#!/usr/bin/env bash
# apt-install.sh PACKAGE... — install Debian packages quietly; refresh the package lists only when the
# install fails from the current ones (a fresh machine may have none, or stale ones).
set -euo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" > "$log" 2>&1; }
if ! install "$@"; then
  apt-get update -qq > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
  install "$@" || { cat "$log" >&2; exit 1; }
fi
