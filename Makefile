# The two commands of the README. Each sets itself up: a virtual env in .venv, the
# packages of requirements-dev.txt, and the extension (rebuilt when csrc/ or setup.py
# change). A second run reuses all of it.
#   make test    run the tests
#   make bench   run the benchmark (ARGS="--quick" for a short run)
#   make test-cuda-emu   build the CUDA emulation (torchlstm._cuda_emu: the real csrc/cuda
#                code compiled with g++ against csrc/cuda_emu) and run its tests;
#                EMU_TSAN=1 builds it with ThreadSanitizer and runs the kernel tests under it
VENV    := .venv
PY      := $(VENV)/bin/python
DEPS    := $(VENV)/.deps-installed
BUILT   := $(VENV)/.ext-built
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh') setup.py pyproject.toml
PYTHON  ?= python3

# The CUDA toolkit, where there is one (torch's own guess misses /usr/local/cuda here).
CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
MAX_JOBS  ?= $(shell nproc)
export CUDA_HOME MAX_JOBS

.PHONY: test bench build clean test-cuda-emu build-cuda-emu

# The CUDA emulation. One output (torchlstm/_cuda_emu*.so) for both flavours: each
# build removes the other flavour's stamp, so switching rebuilds.
EMU_FLAVOUR := $(if $(filter-out 0,$(EMU_TSAN)),tsan,plain)
EMU_OTHER   := $(if $(filter tsan,$(EMU_FLAVOUR)),plain,tsan)
EMU_BUILT   := $(VENV)/.emu-built-$(EMU_FLAVOUR)
EMU_SOURCES := $(shell find csrc/cuda csrc/cuda_emu -type f) $(wildcard csrc/*.h) \
               csrc/layer_call.cpp csrc/layer_grads.cpp csrc/cpu/host_cache.cpp csrc/cpu/host_cache.h
ifeq ($(EMU_FLAVOUR),tsan)
EMU_RUN     := LD_PRELOAD=$(shell gcc -print-file-name=libtsan.so) OMP_NUM_THREADS=1 \
               TSAN_OPTIONS="halt_on_error=1 report_signal_unsafe=0 $(TSAN_OPTIONS)"
EMU_TESTS   ?= -k "(persistent and not 265 and not 48k) or block_threads or grid_sync"
endif

test: $(BUILT) $(EMU_BUILT)
	$(PY) -m pytest tests $(PYTEST_ARGS)

bench: $(BUILT)
	$(PY) bench/bench.py $(ARGS)

build: $(BUILT)

$(DEPS): requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

$(BUILT): $(DEPS) $(SOURCES)
	@echo "building torchlstm._C (log: $(VENV)/build.log)"
	@$(PY) -m pip install -v --no-build-isolation --no-deps -e . > $(VENV)/build.log 2>&1 \
		|| (tail -n 60 $(VENV)/build.log; exit 1)
	@grep -h "torchlstm: building" $(VENV)/build.log || true
	touch $@

build-cuda-emu: $(EMU_BUILT)

test-cuda-emu: $(BUILT) $(EMU_BUILT)
	$(EMU_RUN) $(PY) -m pytest tests/test_cuda_emu.py $(EMU_TESTS) $(PYTEST_ARGS)

$(EMU_BUILT): $(DEPS) $(EMU_SOURCES)
	@echo "building torchlstm._cuda_emu ($(EMU_FLAVOUR); log: $(VENV)/emu-build.log)"
	@rm -f $(VENV)/.emu-built-$(EMU_OTHER)
	@EMU_TSAN=$(if $(filter tsan,$(EMU_FLAVOUR)),1,0) $(PY) csrc/cuda_emu/build.py > $(VENV)/emu-build.log 2>&1 \
		|| (tail -n 60 $(VENV)/emu-build.log; exit 1)
	touch $@

clean:
	rm -rf build torchlstm/_C*.so torchlstm/_cuda_emu*.so $(BUILT) $(VENV)/.emu-built-*

# make test-sanitize: the CPU extension built with -fsanitize=address,undefined in a copy
# of the sources (.venv/sanitize; the normal build is untouched) and the C++-facing tests
# run on it; fails on any sanitizer report (tools/sanitize.sh). Slow: not part of `make test`.
.PHONY: test-sanitize
test-sanitize: $(DEPS)
	PY=$(PY) MAX_JOBS=$(MAX_JOBS) tools/sanitize.sh

# make wheel-test: `python -m build` (an sdist, then a wheel built from it: the extension
# compiled from scratch, minutes), the wheel installed with pip --target into a fresh
# directory and imported with this venv's torch (tests/test_deploy_wheel.py).
# TORCHLSTM_FORCE_CPU=1 for a CPU-only wheel; TORCHLSTM_WHEEL=path tests a built wheel.
.PHONY: wheel-test
wheel-test: $(DEPS)
	TORCHLSTM_WHEEL_TEST=1 $(PY) -m pytest tests/test_deploy_wheel.py -s $(PYTEST_ARGS)
