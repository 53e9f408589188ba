#!/usr/bin/env bash
# DICOM encoders the tests use to produce JPEG baseline/extended/lossless and JPEG-LS files (Debian dcmtk).
set -euo pipefail
if ! command -v dcmcjpeg > /dev/null || ! command -v dcmcjpls > /dev/null; then
  [[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]] || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dcmtk > /dev/null
fi
