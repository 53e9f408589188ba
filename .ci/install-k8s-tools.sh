#!/usr/bin/env bash
# The Kubernetes manifest checks of tests/test_k8s.py: kubectl (its built-in kustomize renders
# k8s/overlays/*), and kubernetes-validate + checkov in their own venv .venv-k8s (checkov's many
# dependencies stay out of the service's .venv). Idempotent: a second run installs nothing.
#
# kubectl comes with the machine image (/usr/bin/kubectl, Kustomize v5). It is not in Debian's own
# archive (Debian 12's kubernetes-client is 1.20, whose kustomize v2 cannot render these overlays) and
# no download of the static binary is possible here, so when it is missing this script tries apt's
# `kubectl` (present where a Kubernetes apt repository is configured) and otherwise only warns: the
# k8s tests then skip, or fail under CI=true, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
VENV=.venv-k8s

has_kustomize_v5() {
  command -v kubectl > /dev/null && kubectl version --client 2> /dev/null | grep -Eq 'Kustomize Version: v[5-9]'
}

if ! has_kustomize_v5; then
  if apt-cache show kubectl > /dev/null 2>&1 || { apt-get update -qq > /dev/null 2>&1 && apt-cache show kubectl > /dev/null 2>&1; }; then
    bash .ci/apt-install.sh kubectl || true
  fi
fi
if has_kustomize_v5; then
  echo "kubectl: $(kubectl version --client 2> /dev/null | tr '\n' ' ')"
else
  echo "WARNING: no kubectl with kustomize v5 on this machine; tests/test_k8s.py cannot render k8s/overlays" >&2
fi

installed() {
  "$VENV/bin/python" - "$@" 2> /dev/null << 'EOF'
import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted for name, wanted in zip(sys.argv[1::2], sys.argv[2::2])))
EOF
}

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
if ! installed kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" checkov "$CHECKOV_VERSION"; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION" 2>&1 \
    | grep -v "^WARNING: Location 'file:" >&2 || true
  installed kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" checkov "$CHECKOV_VERSION" \
    || { echo "ERROR: kubernetes-validate/checkov did not install into $VENV" >&2; exit 1; }
fi
echo "$VENV: kubernetes-validate $KUBERNETES_VALIDATE_VERSION, checkov $CHECKOV_VERSION"
