#!/usr/bin/env bash
# Node.js and npm from Debian, for the real tools the tests start with node: the FHIR test server
# (tests/fhir_server) and the SMART App Launcher (tests/smart, from ../shared/tools/smart-launcher,
# which needs node >= 16). Idempotent: does nothing when node and npm are on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v node > /dev/null 2>&1 && command -v npm > /dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo > /dev/null 2>&1 || { echo "install-node: need root or sudo to install nodejs and npm" >&2; exit 1; }
  sudo bash .ci/apt-install.sh nodejs npm
else
  bash .ci/apt-install.sh nodejs npm
fi
command -v node > /dev/null && command -v npm > /dev/null || { echo "install-node: node or npm missing after install" >&2; exit 1; }
