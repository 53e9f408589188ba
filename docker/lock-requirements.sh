#!/bin/sh
# Regenerates the hashed lock files the service image installs from (Dockerfile, pip --require-hashes):
#   requirements.lock        [project].dependencies of pyproject.toml and everything they pull in
#   requirements-build.lock  [build-system].requires (setuptools, wheel, grpcio-tools: the gRPC stubs),
#                            constrained to the runtime pins so grpcio/protobuf agree between the two
# Both are resolved for the image (CPython 3.11 on Linux), whatever machine runs this, with a pinned uv
# installed into a throw-away venv. Needs PyPI. Run after any change to those two lists:
#   sh docker/lock-requirements.sh            # keep the current pins where they still satisfy pyproject.toml
#   sh docker/lock-requirements.sh --upgrade  # move every pin to the newest release allowed
# tests/test_container.py fails while a pyproject.toml dependency is missing from the lock or its pin
# no longer satisfies pyproject.toml.
set -eu
UV_VERSION=0.13.9
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/uv"
"$tmp/uv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
uv="$tmp/uv/bin/uv"
# [build-system].requires, fed on standard input (a temporary file's name would change every run's lock).
python3 -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' >"$tmp/build.in"
common="--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes --quiet"
# shellcheck disable=SC2086  # $common is a list of options
"$uv" pip compile $common "$@" --custom-compile-command "sh docker/lock-requirements.sh" \
  --output-file requirements.lock pyproject.toml
# shellcheck disable=SC2086
"$uv" pip compile $common "$@" --custom-compile-command "sh docker/lock-requirements.sh" \
  --constraints requirements.lock --output-file requirements-build.lock - <"$tmp/build.in"
echo "requirements.lock: $(grep -c '^[a-z0-9]' requirements.lock) packages;" \
  "requirements-build.lock: $(grep -c '^[a-z0-9]' requirements-build.lock) packages"
