#!/usr/bin/env bash
# promtool for tests/test_alerts.py (`promtool check rules`, `promtool test rules` on
# k8s/overlays/prod/alerts.yaml): Debian's `prometheus` package ships it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool > /dev/null; then
  bash .ci/apt-install.sh prometheus
  # The package's server is not wanted here: only its promtool (a service started by the package
  # post-install would listen on 9090, which the service's metrics port may use in tests).
  if command -v systemctl > /dev/null && systemctl is-active --quiet prometheus 2> /dev/null; then
    systemctl stop prometheus || true
  fi
fi
echo "promtool: $(promtool --version 2>&1 | head -1)"
