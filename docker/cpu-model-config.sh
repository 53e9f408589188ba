#!/bin/sh
# Rewrite a Triton model repository's config.pbtxt files for a CPU-only Triton (the dev image,
# `docker build --build-arg DEVICE=cpu`): instances on KIND_CPU, and the top-level `optimization`
# block (the TensorRT GPU execution accelerator, which a server without a GPU refuses) removed.
# Everything else (tensors, batching, warm-up, the calibration and threshold parameters) stays.
# Run by docker/triton.Dockerfile and by tests/test_k8s.py on a copy of model_repository/.
#   sh docker/cpu-model-config.sh /models
set -eu
repository=${1:?usage: cpu-model-config.sh MODEL_REPOSITORY}
for config in "$repository"/*/config.pbtxt; do
  awk '
    /^optimization[ \t]*\{/ { skipping = 1 }
    skipping { if ($0 ~ /^\}/) skipping = 0; next }
    { gsub(/KIND_GPU/, "KIND_CPU"); print }
  ' "$config" > "$config.cpu"
  mv "$config.cpu" "$config"
done
