# syntax=docker/dockerfile:1.7
# The CDS Hooks service image: `docker build -t registry.example.org/hipcad/cds-service:0.1.0 .`
#
# Stage 1 builds wheels for the package and every dependency (`pip wheel .`; setup.py compiles the
# gRPC stubs from proto/ with grpcio-tools, a build requirement fetched into pip's isolated build
# environment). Stage 2 installs only those wheels into a clean slim Python: no compiler, no build
# tools, no sources, and runs as a numeric non-root user.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# What the wheel is built from (see .dockerignore): metadata, the gRPC protos, the package and the
# CDS Hooks definitions that cds_service/hooks links to.
COPY pyproject.toml setup.py README.md ./
COPY proto/ proto/
COPY hooks/ hooks/
COPY cds_service/ cds_service/
RUN pip wheel --wheel-dir /wheels . \
 && ls /wheels/hipcad_cds_service-*.whl

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="hipcad cds-service" \
      org.opencontainers.image.description="CDS Hooks 2.0 hip-fracture service (not for clinical use)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HIPCAD_HOST=0.0.0.0 \
    HIPCAD_PORT=8080 \
    HIPCAD_DICOM_FOLDER=/var/lib/hipcad/dicom \
    HIPCAD_FEEDBACK_DB=/var/lib/hipcad/feedback.sqlite3
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels hipcad-cds-service \
 && groupadd --system --gid 10001 hipcad \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin hipcad \
 && mkdir -p /var/lib/hipcad/dicom \
 && chown -R 10001:10001 /var/lib/hipcad
WORKDIR /var/lib/hipcad
USER 10001:10001
# 8080: hooks, viewer, probes; 9090: /metrics when HIPCAD_METRICS_PORT=9090 (as k8s/base sets it).
EXPOSE 8080 9090
# Kubernetes probes /startupz (start-up), /healthz (liveness) and /readyz (readiness), k8s/base/cds-service.yaml.
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: the image runs on Kubernetes, whose probes replace it
ENTRYPOINT ["cds-service"]
CMD ["serve"]
