#!/usr/bin/env bash
# gpu/validate.sh - make gpu-validate: the GPU engine's first-contact check on
# a GPU host, in one run of under 8 minutes. It builds with gcc, nvcc and the
# CUDA libraries alone (no ZeroMQ, RocksDB or msgpack; Criterion and OpenBLAS
# only if present), and then, in order:
#   1. driver and toolkit: nvidia-smi's GPUs and driver, nvcc's version;
#   2. the build: gpu/, common/ and shoal-gpu-check; it must come out as a
#      CUDA build (a toolkit make cannot use fails here, never falls back to
#      a CPU-only build in silence);
#   3. test_gpu and test_knn, whose scenarios run on "gpu:0" (fp32 bit for bit
#      against the CPU, fp16 recall, a tiny budget), when Criterion is there;
#   4. compute-sanitizer memcheck and racecheck over a small gpu-check run,
#      when the toolkit has it;
#   5. shoal-gpu-check --quick (edge cases, mutations, the table to 100k);
#   6. the targets: 10,000 x 1M x 128, k = 10 (gpu-check --headline);
#   7. the k-NN graph of 1M x 128, k = 10, timed (gpu-check --graph).
# Every step prints "RESULT gpu-validate <step> ... status=ok|FAIL|skipped";
# the last line sums up. Without a GPU: "RESULT gpu-validate skipped=no_device",
# exit 0. Exit 1 when any step failed.
#
# Environment: BUILD (default build/gpu-validate), GPU_VALIDATE_N (rows of
# steps 6 and 7, default 1000000), GPU_VALIDATE_DEVICES (default auto),
# CUDA_HOME (default /usr/local/cuda).
set -u
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build/gpu-validate}
N=${GPU_VALIDATE_N:-1000000}
DEVICES=${GPU_VALIDATE_DEVICES:-auto}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
JOBS=$(nproc 2>/dev/null || echo 4)
LOG=$BUILD/validate.log
FAILED=0
START=$(date +%s)
export SHOAL_LOG_LEVEL=${SHOAL_LOG_LEVEL:-warn}

result() { echo "RESULT gpu-validate $*"; }
elapsed() { echo $(($(date +%s) - START)); }

# Runs "$@" with a time limit, output to the terminal and the log; its status.
step() {
    local limit=$1
    shift
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    return "${PIPESTATUS[0]}"
}

mkdir -p "$BUILD"
: >"$LOG"

# 1. Driver and toolkit.
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu-validate: no GPU: nvidia-smi not found (no NVIDIA driver)"
    result "skipped=no_device"
    exit 0
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "gpu-validate: no GPU: $(nvidia-smi -L 2>&1 | head -n 1)"
    result "skipped=no_device"
    exit 0
fi
nvidia-smi -L | tee -a "$LOG"
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr ' ' '_')
NVCC=$(command -v nvcc || echo "$CUDA_HOME/bin/nvcc")
if [ ! -x "$NVCC" ]; then
    result "toolkit status=FAIL reason=no_nvcc card=$CARD driver=$DRIVER"
    exit 1
fi
TOOLKIT=$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
result "device card=$CARD driver=$DRIVER toolkit=$TOOLKIT gpus=$(nvidia-smi -L | grep -c '^GPU ')"

# 2. The build: gpu/ and common/ alone. NET_CFLAGS/NET_LIBS empty: no
# pkg-config lookups of the networked libraries a GPU host does not have.
MK=(make --no-print-directory BUILD="$BUILD" BIN="$BUILD/bin" NET_CFLAGS= NET_LIBS=
    CUDA_HOME="$CUDA_HOME")
KIND=$("${MK[@]}" info | sed -n 's/^build: *//p')
case $KIND in
cuda*) ;;
*)
    result "build status=FAIL reason=not_a_cuda_build kind=\"$KIND\""
    exit 1
    ;;
esac
if ! step 240 "${MK[@]}" -j"$JOBS" gpu-lib "$BUILD/bin/shoal-gpu-check" >/dev/null; then
    result "build status=FAIL (see $LOG)"
    exit 1
fi
CHECK=$BUILD/bin/shoal-gpu-check
result "build status=ok kind=cuda seconds=$(elapsed)"

# The runtime must see the GPU nvidia-smi saw (a driver older than the
# toolkit's runtime would otherwise turn every later step into a skip).
SMOKE=$("$CHECK" --devices "$DEVICES" --graph 1000 --dim 8 2>&1)
echo "$SMOKE" >>"$LOG"
if echo "$SMOKE" | grep -q 'skipped=no_device'; then
    result "runtime status=FAIL reason=\"$(echo "$SMOKE" | sed -n 's/^gpu-check: //p' | head -n 1)\""
    exit 1
fi
result "runtime status=$(echo "$SMOKE" | grep -q 'status=ok' && echo ok || echo FAIL)"
echo "$SMOKE" | grep -q 'status=ok' || FAILED=1

# 3. The suites, GPU against CPU (Criterion needed; gpu-check covers the same otherwise).
if pkg-config --exists criterion 2>/dev/null; then
    for t in gpu knn knn:overlap; do
        bin=$BUILD/tests/test_${t%%:*}
        overlap=$([ "$t" = knn:overlap ] && echo 1 || echo 0)
        if step 120 "${MK[@]}" -j"$JOBS" "$bin" >/dev/null &&
            SHOAL_GPU_OVERLAP=$overlap step 120 "$bin" --jobs=1; then
            result "test_$t status=ok"
        else
            result "test_$t status=FAIL"
            FAILED=1
        fi
    done
else
    result "tests status=skipped reason=no_criterion (gpu-check parts 1-2 compare GPU and CPU)"
fi

# 4. compute-sanitizer on a small run: every kernel, the stages, one merge.
SAN=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
if [ -x "$SAN" ]; then
    for tool in memcheck racecheck; do
        if step 90 "$SAN" --tool "$tool" --error-exitcode 9 "$CHECK" --devices "$DEVICES" \
            --headline --max-n 20000 --no-torch --dim 64 >/dev/null; then
            result "sanitizer tool=$tool status=ok"
        else
            result "sanitizer tool=$tool status=FAIL"
            FAILED=1
        fi
    done
else
    result "sanitizer status=skipped reason=no_compute_sanitizer"
fi

# 5-7. The check program: quick table, then the targets, then the graph.
run_check() {
    local name=$1 limit=$2
    shift 2
    if step "$limit" "$CHECK" --devices "$DEVICES" "$@"; then
        result "$name status=ok seconds=$(elapsed)"
    else
        result "$name status=FAIL seconds=$(elapsed)"
        FAILED=1
    fi
}
run_check quick 150 --quick --no-torch --ref-gflop 50
run_check targets 150 --headline --max-n "$N"
run_check graph 90 --graph "$N"

result "summary card=$CARD status=$([ $FAILED = 0 ] && echo ok || echo FAIL) seconds=$(elapsed) log=$LOG"
exit $FAILED
