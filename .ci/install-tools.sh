#!/usr/bin/env bash
# DICOM encoders the tests use to produce JPEG baseline/extended/lossless and JPEG-LS files (Debian dcmtk),
# and David Clunie's dicom3tools for `dciodvfy`, the IOD validator the tests run on every DICOM we write.
set -euo pipefail
if ! command -v dcmcjpeg > /dev/null || ! command -v dcmcjpls > /dev/null; then
  bash "$(dirname "$0")/apt-install.sh" dcmtk
fi
if ! command -v dciodvfy > /dev/null; then
  bash "$(dirname "$0")/apt-install.sh" dicom3tools
fi
