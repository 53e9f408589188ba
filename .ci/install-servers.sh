#!/usr/bin/env bash
# The real servers the tests start: Orthanc (Debian, with DICOMweb and GDCM plugins) and the in-memory
# FHIR server on Medplum's engine (npm, pinned by tests/fhir_server/package-lock.json). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
plugins=/usr/share/orthanc/plugins
if [[ ! -x /usr/sbin/Orthanc || ! -f $plugins/libOrthancDicomWeb.so || ! -f $plugins/libOrthancGdcm.so ]]; then
  bash .ci/apt-install.sh orthanc orthanc-dicomweb orthanc-gdcm
fi
if [[ ! -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then
  bash .ci/apt-install.sh postgresql  # the shared store's engine; tests start throwaway clusters
fi
lock=tests/fhir_server/package-lock.json
stamp=tests/fhir_server/node_modules/.installed
if [[ ! -f $stamp ]] || [[ "$(sha256sum < "$lock")" != "$(cat "$stamp")" ]]; then
  (cd tests/fhir_server && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
  sha256sum < "$lock" > "$stamp"
fi
