#!/usr/bin/env bash
# bench/gpu_check.sh — the GPU check, as TWO calls on a lent GPU machine (H100/H200), each
# well under 5 minutes, each printing its own summary as it ends (a call cut at its limit
# still shows what the stages before did):
#
#   bash bench/gpu_check.sh tests   # pre-flight, build for sm_90, CUDA tests (--maxfail),
#                                   # compute-sanitizer (memcheck, racecheck, synccheck)
#   bash bench/gpu_check.sh bench   # the benchmark against cuDNN (float32, bfloat16)
#
# Logs, ptxas' resource report, results.json and ratios.png go to $OUT (or bench/out/gpu).
# QUICK=1 runs one benchmark size only. Everything the CPU can check was checked before
# (make test, including the CPU emulation of the CUDA kernels: make test-cuda-emu).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-tests}
OUT_DIR=${OUT:-bench/out/gpu}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export TORCHLSTM_CUDA_ARCHS=${TORCHLSTM_CUDA_ARCHS:-90}
export TORCHLSTM_PTXAS_VERBOSE=1
export TORCHLSTM_EXPECT_CUDA_BUILD=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
t0=$(date +%s)
stamp() { echo "[gpu_check $STAGE +$(( $(date +%s) - t0 ))s] $*"; }

# Pre-flight: what the stage needs, with a clear message (nothing is installed here).
NEED="torch"
[ "$STAGE" = tests ] && NEED="torch pytest"
if ! $PY - "$NEED" <<'EOF'
import importlib, sys
missing = [m for m in sys.argv[1].split() if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)} (pip install them first)")
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA GPU")
for opt in ("tqdm", "matplotlib"):
    if importlib.util.find_spec(opt) is None:
        print(f"gpu_check: {opt} not installed (optional: the benchmark runs without it)")
EOF
then
  exit 2
fi
DEVICE=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
VERSIONS=$($PY -c "import torch, sys; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), Python {sys.version.split()[0]}')")
stamp "device: $DEVICE; $VERSIONS"

build() {
  if $PY -c "import torchlstm, sys; sys.exit(0 if torchlstm._C.cuda_build() else 1)" 2>/dev/null; then
    stamp "torchlstm._C already built with CUDA"
    return 0
  fi
  stamp "building (log: $OUT_DIR/build.log)"
  if ! timeout 150 $PY setup.py build_ext --inplace > "$OUT_DIR/build.log" 2>&1; then
    tail -n 60 "$OUT_DIR/build.log"
    stamp "BUILD FAILED"
    return 1
  fi
  grep -A3 "Compiling entry function" "$OUT_DIR/build.log" \
    | grep -E "entry function|registers|spill" > "$OUT_DIR/ptxas.txt" || true
  SPILLS=$(grep -c "[1-9][0-9]* bytes spill" "$OUT_DIR/ptxas.txt" || true)
  stamp "built ($(grep -c "entry function" "$OUT_DIR/ptxas.txt" || true) kernels, $SPILLS with spills; $OUT_DIR/ptxas.txt)"
}

if [ "$STAGE" = tests ]; then
  build || exit 1
  stamp "CUDA tests (log: $OUT_DIR/tests.log)"
  XDIST=$($PY -c "import xdist" >/dev/null 2>&1 && echo "-n 4" || true)
  CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout 120 $PY -m pytest -q -p no:cacheprovider -rfE \
    --maxfail=20 $XDIST tests/test_cuda.py tests/test_cuda_plan.py tests/test_build.py \
    > "$OUT_DIR/tests.log" 2>&1
  TEST_RC=$?
  TESTS=$(tail -n 1 "$OUT_DIR/tests.log")
  grep -E "^(FAILED|ERROR)" "$OUT_DIR/tests.log" | head -n 40
  stamp "tests: $TESTS (rc $TEST_RC)"
  SAN="not run (no compute-sanitizer)"
  CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ -n "$CS" ]; then
    SAN=""
    # the tiny cases: both forward paths, backward, masks, regularisers
    KEXPR="(test_layer_matches_cpu_float64 and False-True-True-False) or test_float16_persistent"
    for tool in memcheck racecheck synccheck; do
      timeout 40 "$CS" --tool $tool --error-exitcode 99 $PY -m pytest -q -p no:cacheprovider -x \
        tests/test_cuda.py -k "$KEXPR" > "$OUT_DIR/sanitizer-$tool.log" 2>&1
      rc=$?
      SAN="$SAN $tool: $( [ $rc -eq 0 ] && echo clean || echo "rc $rc (see sanitizer-$tool.log)" );"
      stamp "compute-sanitizer $tool: rc $rc"
    done
  fi
  echo
  echo "==== torchlstm GPU check (tests), $(date -u +%Y-%m-%dT%H:%MZ) ===="
  echo "device: $DEVICE"
  echo "$VERSIONS"
  echo "CUDA tests: $TESTS (rc $TEST_RC)"
  echo "compute-sanitizer:$SAN"
  echo "total $(( $(date +%s) - t0 )) s"
  [ $TEST_RC -eq 0 ]
elif [ "$STAGE" = bench ]; then
  build || exit 1
  stamp "benchmark vs cuDNN (log: $OUT_DIR/bench.txt)"
  BENCH_ARGS="--device cuda --no-compile --repeats 5 --out $OUT_DIR"
  [ "${QUICK:-0}" = "1" ] && BENCH_ARGS="$BENCH_ARGS --quick"
  timeout 240 $PY bench/bench.py $BENCH_ARGS > "$OUT_DIR/bench.txt" 2> "$OUT_DIR/bench.err"
  BENCH_RC=$?
  [ $BENCH_RC -ne 0 ] && tail -n 30 "$OUT_DIR/bench.err"
  echo
  echo "==== torchlstm GPU check (bench), $(date -u +%Y-%m-%dT%H:%MZ) ===="
  echo "device: $DEVICE"
  echo "$VERSIONS"
  echo "benchmark rc $BENCH_RC, total $(( $(date +%s) - t0 )) s"
  cat "$OUT_DIR/bench.txt"
  [ $BENCH_RC -eq 0 ]
else
  echo "usage: bash bench/gpu_check.sh tests|bench" >&2
  exit 2
fi
