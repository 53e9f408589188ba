# syntax=docker/dockerfile:1.7
# The CDS Hooks service image: `docker build -t registry.example.org/hipcad/cds-service:0.1.0 .`
#
# Supply chain (tests/test_container.py checks each point):
# * every FROM names its base by digest. The digests below are placeholders that no registry has, so
#   nothing builds from an unpinned base: the release pipeline (or a developer, README "Container
#   images") writes the digest of the tag it resolved and scanned, e.g. the "Digest:" line of
#   `docker buildx imagetools inspect python:3.11-slim-bookworm`. Both stages use the same one: the
#   venv copied between them links to the base image's /usr/local/bin/python3.11.
# * every third-party package comes from requirements.lock / requirements-build.lock (exact versions,
#   sha256 of every file; regenerate with `sh docker/lock-requirements.sh`) and pip runs with
#   --require-hashes, so it refuses anything unpinned, unhashed or altered.
# * the runtime stage holds the venv and the interpreter only: no pip, setuptools, wheel or ensurepip,
#   no compiler, no sources.
#
# Stage 1: a build venv (setuptools, wheel, grpcio-tools from the build lock) builds the package's wheel
# without build isolation (setup.py compiles the gRPC stubs from proto/); a second venv, created
# without pip, gets the runtime lock and that wheel, installed by the build venv's pip.
FROM python:3.11-slim-bookworm@sha256:0000000000000000000000000000000000000000000000000000000000000000 AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements-build.lock \
 && python -m venv --without-pip /opt/venv \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --require-hashes --only-binary=:all: \
        -r requirements.lock
# What the wheel is built from (see .dockerignore): metadata, the gRPC protos, the package and the
# CDS Hooks definitions that cds_service/hooks links to.
COPY pyproject.toml setup.py README.md ./
COPY proto/ proto/
COPY hooks/ hooks/
COPY cds_service/ cds_service/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /wheels . \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps --no-index /wheels/hipcad_cds_service-*.whl \
 && /opt/build/bin/pip --python /opt/venv/bin/python check \
 && test ! -e /opt/venv/bin/pip \
 && /opt/venv/bin/python -c "import cds_service.cli"

# Stage 2: the slim base without its pip, plus the venv.
FROM python:3.11-slim-bookworm@sha256:0000000000000000000000000000000000000000000000000000000000000000
LABEL org.opencontainers.image.title="hipcad cds-service" \
      org.opencontainers.image.description="CDS Hooks 2.0 hip-fracture service (not for clinical use)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HIPCAD_HOST=0.0.0.0 \
    HIPCAD_PORT=8080 \
    HIPCAD_DICOM_FOLDER=/var/lib/hipcad/dicom \
    HIPCAD_FEEDBACK_DB=/var/lib/hipcad/feedback.sqlite3
# The base image's installer goes: pip (which uninstalls itself last), setuptools and wheel where the
# base has them, pip's console scripts, and ensurepip with its bundled pip wheel.
RUN python -m pip uninstall --yes --disable-pip-version-check setuptools wheel pip \
 && rm -rf /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/lib/python3.11/ensurepip \
 && ! python -c "import pip" 2>/dev/null \
 && groupadd --system --gid 10001 hipcad \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin hipcad \
 && mkdir -p /var/lib/hipcad/dicom \
 && chown -R 10001:10001 /var/lib/hipcad
COPY --from=builder /opt/venv /opt/venv
WORKDIR /var/lib/hipcad
USER 10001:10001
# 8080: hooks, viewer, probes; 9090: /metrics when HIPCAD_METRICS_PORT=9090 (as k8s/base sets it).
EXPOSE 8080 9090
# Kubernetes probes /startupz (start-up), /healthz (liveness) and /readyz (readiness), k8s/base/cds-service.yaml.
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: the image runs on Kubernetes, whose probes replace it
ENTRYPOINT ["cds-service"]
CMD ["serve"]
