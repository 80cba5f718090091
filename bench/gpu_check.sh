#!/usr/bin/env bash
# bench/gpu_check.sh — the whole GPU check, for one call on a lent GPU machine (H100/H200,
# torch 2.11 cu130, Python 3.12, no network), in under 8 minutes:
#   1. build torchlstm._C in place for sm_90 with that machine's torch and nvcc,
#   2. run the CUDA tests (tests/test_cuda*.py, tests/test_build.py),
#   3. run the benchmark on the GPU against cuDNN (float32 and bfloat16, inference and
#      forward+backward, the sizes of bench.py's GPU_CASES),
# and print a short summary last: device, test result, the table.
#
#   bash bench/gpu_check.sh            # logs and results.json/ratios.png under $OUT (or bench/out/gpu)
#   QUICK=1 bash bench/gpu_check.sh    # one benchmark size only
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-bench/out/gpu}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export TORCHLSTM_CUDA_ARCHS=${TORCHLSTM_CUDA_ARCHS:-90}
export TORCHLSTM_PTXAS_VERBOSE=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
t0=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - t0 ))s] $*"; }

DEVICE=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
VERSIONS=$($PY -c "import torch, sys; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), Python {sys.version.split()[0]}')")
stamp "device: $DEVICE; $VERSIONS"

stamp "building (log: $OUT_DIR/build.log)"
if ! timeout 200 $PY setup.py build_ext --inplace > "$OUT_DIR/build.log" 2>&1; then
  tail -n 60 "$OUT_DIR/build.log"
  stamp "BUILD FAILED"
  exit 1
fi
grep -h "torchlstm: building" "$OUT_DIR/build.log" | head -1
# the compiler's resource report of the CUDA kernels (registers, spills), for the notes
grep -A3 "Compiling entry function" "$OUT_DIR/build.log" \
  | grep -E "entry function|registers|spill" > "$OUT_DIR/ptxas.txt" || true
SPILLS=$(grep -c "[1-9][0-9]* bytes spill" "$OUT_DIR/ptxas.txt" || true)
stamp "built ($(grep -c "entry function" "$OUT_DIR/ptxas.txt" || true) kernels, $SPILLS with spills; $OUT_DIR/ptxas.txt)"

stamp "CUDA tests (log: $OUT_DIR/tests.log)"
# several workers where pytest-xdist is installed (the GPU image has it)
XDIST=$($PY -c "import xdist" >/dev/null 2>&1 && echo "-n 4" || true)
CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout 200 $PY -m pytest -q -p no:cacheprovider -rfE $XDIST \
  tests/test_cuda.py tests/test_cuda_plan.py tests/test_build.py > "$OUT_DIR/tests.log" 2>&1
TEST_RC=$?
TESTS=$(tail -n 1 "$OUT_DIR/tests.log")
grep -E "^(FAILED|ERROR)" "$OUT_DIR/tests.log" | head -n 40
stamp "tests: $TESTS (rc $TEST_RC)"

stamp "benchmark vs cuDNN (log: $OUT_DIR/bench.txt)"
BENCH_ARGS="--device cuda --no-compile --repeats 5 --out $OUT_DIR"
[ "${QUICK:-0}" = "1" ] && BENCH_ARGS="$BENCH_ARGS --quick"
timeout 200 $PY bench/bench.py $BENCH_ARGS > "$OUT_DIR/bench.txt" 2> "$OUT_DIR/bench.err"
BENCH_RC=$?
[ $BENCH_RC -ne 0 ] && tail -n 30 "$OUT_DIR/bench.err"

echo
echo "==== torchlstm GPU check, $(date -u +%Y-%m-%dT%H:%MZ) ===="
echo "device: $DEVICE"
echo "$VERSIONS"
echo "CUDA tests: $TESTS (rc $TEST_RC)"
echo "benchmark rc $BENCH_RC, total $(( $(date +%s) - t0 )) s"
cat "$OUT_DIR/bench.txt"
[ $TEST_RC -eq 0 ] && [ $BENCH_RC -eq 0 ]
