#!/usr/bin/env bash
# tools/sanitize.sh (make test-sanitize): the CPU extension built with AddressSanitizer and
# UndefinedBehaviorSanitizer, and the C++-facing tests run on it; fails on any report.
#
# The build happens in a copy of the sources under $SANITIZE_DIR (default .venv/sanitize),
# never in the checkout: the normal in-place build (torchlstm/_C*.so, build/) is untouched.
# A second run rebuilds only what changed (the copy keeps the sources' times).
#
#   PY             the Python with torch and pytest (default .venv/bin/python)
#   SANITIZE_DIR   where the copy, the build, its log and the reports go
#   MAX_JOBS       parallel compile jobs (default 1)
#   TESTS          the test files (default: the C++-facing ones below)
#   PYTEST_ARGS    more pytest arguments
#
# Python itself is not instrumented, so the sanitizer runtimes are preloaded; leaks are not
# checked (the interpreter keeps memory until exit by design). pytest captures at the
# Python level only (--capture=sys), so a report, written to file descriptor 2 by the
# sanitizer runtime, reaches the terminal and $SANITIZE_DIR/test.log even when it ends the
# process; any report there fails the run. SANITIZE_HALT=0 keeps going after a UBSan
# report (to see them all); the default stops at the first.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
DIR=${SANITIZE_DIR:-$ROOT/.venv/sanitize}
case "$DIR" in /*) ;; *) DIR=$ROOT/$DIR ;; esac
TREE=$DIR/tree
TESTS=${TESTS:-"tests/test_ops.py tests/test_lstm_vs_nn.py tests/test_errors.py tests/test_dropout.py tests/test_host_cache.py tests/test_cell_rnn_keras.py tests/test_bad_inputs.py tests/test_concurrency.py"}
export MAX_JOBS=${MAX_JOBS:-1}

start=$(date +%s)
[ -x "$PY" ] || { echo "sanitize: no Python at $PY (set PY=...)"; exit 2; }
CXX=${CXX:-c++}
LIBASAN=$($CXX -print-file-name=libasan.so)
LIBUBSAN=$($CXX -print-file-name=libubsan.so)
for lib in "$LIBASAN" "$LIBUBSAN"; do
  [ -e "$lib" ] || { echo "sanitize: $lib not found (install the compiler's sanitizer runtimes)"; exit 2; }
done

# 1. a copy of the sources (the built extension and build folder in the copy are kept)
mkdir -p "$TREE"
rm -rf "$TREE/csrc" "$TREE/tests" "$TREE/tools"
find "$TREE/torchlstm" -name '*.py' -delete 2>/dev/null || true
(cd "$ROOT" && tar -cf - --exclude='*.so' --exclude='__pycache__' --exclude='*.o' \
   csrc torchlstm tests setup.py pyproject.toml) | (cd "$TREE" && tar -xf -)

# 2. the sanitized CPU build, in place in the copy
echo "sanitize: building the CPU extension with -fsanitize=address,undefined (log: $DIR/build.log)"
if ! (cd "$TREE" && TORCHLSTM_SANITIZE=1 TORCHLSTM_FORCE_CPU=1 \
      "$PY" setup.py build_ext --inplace > "$DIR/build.log" 2>&1); then
  tail -n 40 "$DIR/build.log"
  echo "sanitize: the build failed"
  exit 1
fi
SO=$(ls "$TREE"/torchlstm/_C*.so)
ldd "$SO" | grep -q libasan || { echo "sanitize: $SO is not linked with libasan"; exit 1; }
built=$(date +%s)

# 3. the tests, on the copy (not on the checkout's torchlstm: python -P, PYTHONPATH the copy)
LOG=$DIR/test.log
export LD_PRELOAD="$LIBASAN $LIBUBSAN${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:print_stacktrace=1"
export UBSAN_OPTIONS="halt_on_error=${SANITIZE_HALT:-1}:print_stacktrace=1"
export PYTHONPATH="$TREE${PYTHONPATH:+:$PYTHONPATH}"
# the sanitized code runs several times slower: longer limits in the process tests
export TORCHLSTM_CHILD_TIMEOUT=${TORCHLSTM_CHILD_TIMEOUT:-120}
export TORCHLSTM_THREAD_TIMEOUT=${TORCHLSTM_THREAD_TIMEOUT:-600}
(cd "$TREE" && "$PY" -P -c "import torchlstm, sys; f = torchlstm._C.__file__; \
print('sanitize: testing', f); sys.exit(0 if f.startswith('$TREE/') else 1)")
set +e
# shellcheck disable=SC2086
(cd "$TREE" && "$PY" -P -m pytest $TESTS -q -p no:cacheprovider --capture=sys \
   ${PYTEST_ARGS:-}) 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)

PATTERN='runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer'
found=$(grep -E -c "$PATTERN" "$LOG" || true)
if [ "$found" -gt 0 ]; then
  echo "sanitize: the reports (full stacks in $LOG):"
  grep -E "$PATTERN" "$LOG" | sort | uniq -c
fi
echo "sanitize: build $((built - start)) s, tests $((end - built)) s; pytest exit $status;" \
     "$found sanitizer report line(s)"
[ "$found" -eq 0 ] && [ "$status" -eq 0 ]
