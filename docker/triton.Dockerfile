# syntax=docker/dockerfile:1.7
# Triton for GPU nodes with the model repository baked in:
#   docker build -f docker/triton.Dockerfile -t registry.example.org/hipcad/triton:0.1.0 .
# NGC release 24.10 = Triton 2.51.0, the same server the local CPU launcher runs (nvidia-pytriton 0.7.0);
# this image adds the onnxruntime backend with the TensorRT execution accelerator that the models'
# config.pbtxt ask for. model_repository/ is copied unchanged; the TensorRT engine cache
# (/models/trt-cache, set in each config.pbtxt) is a volume mounted by the Deployment.
# A cluster without GPU nodes (k8s/overlays/dev) runs the CPU variant of the same image:
#   docker build -f docker/triton.Dockerfile --build-arg DEVICE=cpu -t registry.example.org/hipcad/triton:0.1.0-cpu .
# which rewrites the configs for KIND_CPU instances without the TensorRT accelerator (docker/cpu-model-config.sh).
# The base is named by digest; the zero digest is a placeholder no registry has (nothing builds from an
# unpinned base): the release pipeline writes the digest of the 24.10-py3 it resolved and scanned
# (README "Container images"; tests/test_container.py refuses a FROM without one).
FROM nvcr.io/nvidia/tritonserver:24.10-py3@sha256:0000000000000000000000000000000000000000000000000000000000000000
ARG DEVICE=gpu
COPY --chown=root:root model_repository/ /models/
COPY --chown=root:root docker/cpu-model-config.sh /opt/hipcad/cpu-model-config.sh
RUN if [ "$DEVICE" = cpu ]; then sh /opt/hipcad/cpu-model-config.sh /models; fi
# The ensemble's empty version folder (git keeps it through a .gitkeep); the cache mount point.
RUN mkdir -p /models/hip_analysis/1 /models/trt-cache \
 && rm -f /models/hip_analysis/1/.gitkeep \
 && chown 10001:10001 /models/trt-cache
USER 10001:10001
ENV HOME=/tmp
EXPOSE 8000 8001 8002
# Kubernetes probes /v2/health/ready and /v2/health/live, k8s/base/triton.yaml.
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: the image runs on Kubernetes, whose probes replace it
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", \
     "--load-model=fracture", "--load-model=garden", "--load-model=hip_analysis", "--strict-readiness=true"]
