#!/usr/bin/env bash
# DICOM encoders the tests use to produce JPEG baseline/extended/lossless and JPEG-LS files (Debian dcmtk).
set -euo pipefail
if ! command -v dcmcjpeg > /dev/null || ! command -v dcmcjpls > /dev/null; then
  bash "$(dirname "$0")/apt-install.sh" dcmtk
fi
