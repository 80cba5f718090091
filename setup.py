"""Builds torchlstm._C: the C++ (CPU) kernels, plus the CUDA kernels when the CUDA
toolkit and a CUDA build of torch are both present.

TORCHLSTM_FORCE_CPU=1 builds the CPU-only extension even where CUDA is available.
TORCHLSTM_PTXAS_VERBOSE=1 puts ptxas' resource report of every CUDA kernel in the build log.
TORCHLSTM_SANITIZE=1 adds AddressSanitizer and UndefinedBehaviorSanitizer to the C++ (CPU)
code (-fsanitize=address,undefined, -O1 -g; tools/sanitize.sh, `make test-sanitize`).
TORCHLSTM_CPU_ARCH=generic builds the CPU kernels without AVX2 (they are built with
AVX2+FMA where the build machine has both: the extension is built from source on the
machine that runs it, and ATen's SIMD vectors then take their AVX2 form).
CUDA_HOME defaults to /usr/local/cuda when nvcc lives there (torch's own guess does not
always find it).
"""
import glob
import os
import shutil

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """CUDA_HOME as the user set it, else the toolkit that holds nvcc."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    for candidate in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


# torch.utils.cpp_extension reads CUDA_HOME when it is imported: set it first.
_cuda_home = _find_cuda_home()
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _use_cuda():
    if os.environ.get("TORCHLSTM_FORCE_CPU", "0") not in ("", "0"):
        return False
    return bool(_cuda_home) and torch.version.cuda is not None


def _cpu_flags():
    """AVX2+FMA for ATen's Vectorized (the gate maths' SIMD path) where the CPU has them."""
    if os.environ.get("TORCHLSTM_CPU_ARCH", "native") == "generic":
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return []
    if {"avx2", "fma"} <= flags:
        return ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return []


def _wheel_cuda_includes():
    """include/ folders of the nvidia-* wheels torch was installed with."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for root in spec.submodule_search_locations:
        for inc in sorted(glob.glob(os.path.join(root, "*", "include"))):
            if os.path.exists(os.path.join(inc, "cublas_v2.h")) or os.path.exists(
                    os.path.join(inc, "cusparse.h")):
                found.append(inc)
    return found


def _cublas_link_args():
    """Linker flags for cuBLAS (the CUDA time loops call it directly): the toolkit's, else
    the one in torch's nvidia wheel, which torch itself has loaded by then."""
    if os.path.exists(os.path.join(_cuda_home, "lib64", "libcublas.so")):
        return ["-L" + os.path.join(_cuda_home, "lib64"), "-lcublas"]
    for inc in _wheel_cuda_includes():
        lib = os.path.join(os.path.dirname(inc), "lib")
        names = sorted(glob.glob(os.path.join(lib, "libcublas.so*")))
        if names:
            return ["-L" + lib, "-l:" + os.path.basename(names[0]), "-Wl,-rpath," + lib]
    return ["-lcublas"]


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    # csrc/cuda/*.cpp is plain C++ (the launch plan's bindings): built in every extension
    cpp = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp") + _sources("csrc/cuda/*.cpp")
    # -fopenmp: at::parallel_for is inline and only parallel when compiled with OpenMP;
    # the libgomp it links is the one torch has already loaded (same soname).
    cxx_flags = ["-O3", "-fvisibility=hidden", "-fopenmp"] + _cpu_flags()
    link_flags = ["-fopenmp"]
    if os.environ.get("TORCHLSTM_SANITIZE", "0") not in ("", "0"):
        sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        cxx_flags += sanitize + ["-O1", "-g"]  # -O1 after -O3: the sanitizers' usual level
        link_flags += sanitize
    if not _use_cuda():
        print(f"torchlstm: building the CPU-only extension ({' '.join(cxx_flags)})")
        return CppExtension("torchlstm._C", cpp, extra_compile_args={"cxx": cxx_flags},
                            extra_link_args=link_flags)
    cu = _sources("csrc/cuda/*.cu")
    arch = os.environ.get("TORCHLSTM_CUDA_ARCHS", "80;90")
    # No --use_fast_math: the activations are checked against Keras and float64
    # references, and fast-math's approximate exp/division would loosen that.
    nvcc_flags = ["-O3", "-lineinfo"]
    if os.environ.get("TORCHLSTM_PTXAS_VERBOSE", "0") not in ("", "0"):
        nvcc_flags += ["-Xptxas=-v"]  # the resource report (registers, spills) in the build log
    # The CUDA library headers ATen's CUDA headers include (cublas_v2.h, cusparse.h, ...)
    # come with torch's wheel (nvidia/cu*/include) where the toolkit lacks them; searched
    # after the toolkit's own (-isystem comes after every -I).
    for inc in _wheel_cuda_includes():
        nvcc_flags += ["-isystem", inc]
    for a in arch.split(";"):
        nvcc_flags += [f"-gencode=arch=compute_{a},code=sm_{a}"]
    # embed PTX of the newest arch so later GPUs can JIT it
    last = arch.split(";")[-1]
    nvcc_flags += [f"-gencode=arch=compute_{last},code=compute_{last}"]
    print(f"torchlstm: building with CUDA (CUDA_HOME={_cuda_home}, torch CUDA "
          f"{torch.version.cuda}; cxx: {' '.join(cxx_flags)})")
    return CUDAExtension(
        "torchlstm._C",
        cpp + cu,
        define_macros=[("TORCHLSTM_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link_flags + _cublas_link_args(),
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
