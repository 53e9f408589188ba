#!/usr/bin/env bash
# Triton throughput and latency with Triton's own perf_analyzer: the `fracture` model alone and the
# `hip_analysis` ensemble, each at concurrency 1, 2, 4, 8, two hip crops (uint8 [2,1,S,S]) per
# request, S read from model_repository/fracture/config.pbtxt. Starts the local Triton
# (python -m cds_service.inference.triton_server: the python-backend twins, as the tests use) on
# free loopback ports and stops it at the end.
#
#   bench/triton.sh                                            # the full run (about 2-4 minutes)
#   CONCURRENCY=1 MEASUREMENT_MS=500 MAX_TRIALS=3 STABILITY_PCT=100 bench/triton.sh   # a smoke run
#
# Settings (environment): CONCURRENCY ("1 2 4 8"), MODELS ("fracture hip_analysis"), BATCH (2),
# MEASUREMENT_MS (5000, perf_analyzer's --measurement-interval), MAX_TRIALS (10), STABILITY_PCT (10,
# how far 3 windows may differ; perf_analyzer gives up after MAX_TRIALS windows), OUT (run folder,
# var/bench/triton-<time>), PERF_ANALYZER (path of the binary), PA_ARGS (more perf_analyzer flags).
#
# perf_analyzer: the tritonclient 2.51.0 wheel (the same release as the bundled tritonserver 2.51.0)
# ships it as a binary; this script installs that wheel alone (--no-deps) into var/perf-analyzer so
# the service's own tritonclient stays as it is. The binary needs libb64.so.0d and libcudart.so.12,
# which a plain Debian machine lacks; nvidia-pytriton's wheel carries both (renamed by auditwheel)
# in .venv-triton, so the script links them under their real names into var/perf-analyzer/libs.
# No GPU is needed: libcudart is only loaded, CUDA shared memory is not used.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PY:-.venv/bin/python}
CONCURRENCY=${CONCURRENCY:-"1 2 4 8"}
MODELS=${MODELS:-"fracture hip_analysis"}
BATCH=${BATCH:-2}
MEASUREMENT_MS=${MEASUREMENT_MS:-5000}
MAX_TRIALS=${MAX_TRIALS:-10}
STABILITY_PCT=${STABILITY_PCT:-10}
PA_VENV=${PA_VENV:-var/perf-analyzer}
OUT=${OUT:-var/bench/triton-$(date +%Y%m%d-%H%M%S)}
PA_VERSION=2.51.0

find_perf_analyzer() {
    local candidate
    for candidate in "${PERF_ANALYZER:-}" "$PA_VENV/bin/perf_analyzer" .venv/bin/perf_analyzer "$(command -v perf_analyzer || true)"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return
        fi
    done
    echo "installing perf_analyzer (tritonclient==$PA_VERSION, binary only) into $PA_VENV" >&2
    python3 -m venv "$PA_VENV" >&2
    "$PA_VENV/bin/pip" install --quiet --no-deps "tritonclient==$PA_VERSION" >&2
    echo "$PA_VENV/bin/perf_analyzer"
}

PA=$(find_perf_analyzer)
LIBS="$ROOT/$PA_VENV/libs"
mkdir -p "$LIBS"
TRITON_LIBS=$(ls -d .venv-triton/lib/python3.*/site-packages/nvidia_pytriton.libs 2>/dev/null | head -n1 || true)
link_lib() {  # link_lib SONAME GLOB: give an auditwheel-renamed copy its real name
    local found
    [[ -e "$LIBS/$1" ]] && return 0
    found=$(ls "$TRITON_LIBS"/$2 2>/dev/null | head -n1 || true)
    [[ -n "$found" ]] && ln -sf "$ROOT/$found" "$LIBS/$1"
    return 0
}
if [[ -n "$TRITON_LIBS" ]]; then
    link_lib libb64.so.0d 'libb64-*.so.0d'
    link_lib libcudart.so.12 'libcudart-*.so.12*'
fi
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$PA" | awk '/not found/ {print $1}' || true)
if [[ -n "$missing" ]]; then
    echo "perf_analyzer ($PA) cannot start, missing shared libraries: $missing" >&2
    echo "  libb64.so.0d: apt-get install libb64-0d; libcudart.so.12: pip install nvidia-cuda-runtime-cu12" >&2
    echo "  (both also come with .venv-triton: pip install -r requirements-triton.txt)" >&2
    exit 1
fi

mkdir -p "$OUT"
CPU=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)
CPU="$CPU, $(nproc) cores"
SIZE=$("$PY" -c 'from pathlib import Path; from cds_service.inference.triton_server import read_model_config as r; print(r(Path("model_repository/fracture/config.pbtxt")).input[0].dims[-1])')
echo "CPU: $CPU; load average now: $(cut -d' ' -f1-3 /proc/loadavg) (other work on these cores skews every figure)"
echo "perf_analyzer: $PA; results in $OUT"

"$PY" -m cds_service.inference.triton_server --workdir "$OUT/triton" --ready-file "$OUT/ready.json" >"$OUT/triton.out" 2>&1 &
TRITON_PID=$!
stop_triton() {
    kill -TERM "$TRITON_PID" 2>/dev/null || true
    wait "$TRITON_PID" 2>/dev/null || true
}
trap stop_triton EXIT
for _ in $(seq 1 900); do
    [[ -s "$OUT/ready.json" ]] && break
    if ! kill -0 "$TRITON_PID" 2>/dev/null; then
        echo "the local Triton did not start:" >&2
        tail -n 30 "$OUT/triton.out" >&2
        exit 1
    fi
    sleep 0.2
done
[[ -s "$OUT/ready.json" ]] || { echo "the local Triton was not ready in 180 s" >&2; exit 1; }
GRPC=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"])' "$OUT/ready.json")
HTTP=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$OUT/ready.json")
echo "Triton ready: gRPC 127.0.0.1:$GRPC, HTTP 127.0.0.1:$HTTP"

for model in $MODELS; do
    for c in $CONCURRENCY; do
        run="$OUT/$model-c$c"
        "$PY" bench/triton_report.py stats --url "http://127.0.0.1:$HTTP" >"$run.before.json"
        # shellcheck disable=SC2086 # PA_ARGS is a list of flags
        if ! "$PA" -m "$model" -u "127.0.0.1:$GRPC" -i grpc -b "$BATCH" --shape "image:1,$SIZE,$SIZE" \
            --concurrency-range "$c:$c" --measurement-interval "$MEASUREMENT_MS" --max-trials "$MAX_TRIALS" \
            --stability-percentage "$STABILITY_PCT" -f "$run.csv" ${PA_ARGS:-} >"$run.log" 2>&1; then
            echo "perf_analyzer failed for $model at concurrency $c:" >&2
            tail -n 20 "$run.log" >&2
            exit 1
        fi
        "$PY" bench/triton_report.py stats --url "http://127.0.0.1:$HTTP" >"$run.after.json"
        echo "measured $model at concurrency $c"
    done
done

"$PY" bench/triton_report.py table "$OUT" --cpu "$CPU" --batch "$BATCH" --size "$SIZE" | tee "$OUT/summary.txt"
