"""Builds torchlstm._C: the C++ (CPU) kernels, plus the CUDA kernels when the CUDA
toolkit and a CUDA build of torch are both present.

TORCHLSTM_FORCE_CPU=1 builds the CPU-only extension even where CUDA is available.
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


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    cpp = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    cxx_flags = ["-O3", "-fvisibility=hidden"]
    if not _use_cuda():
        print("torchlstm: building the CPU-only extension")
        return CppExtension("torchlstm._C", cpp, extra_compile_args={"cxx": cxx_flags})
    cu = _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    arch = os.environ.get("TORCHLSTM_CUDA_ARCHS", "80;90")
    nvcc_flags = ["-O3", "--use_fast_math", "-lineinfo"]
    for a in arch.split(";"):
        nvcc_flags += [f"-gencode=arch=compute_{a},code=sm_{a}"]
    # embed PTX of the newest arch so later GPUs can JIT it
    last = arch.split(";")[-1]
    nvcc_flags += [f"-gencode=arch=compute_{last},code=compute_{last}"]
    print(f"torchlstm: building with CUDA (CUDA_HOME={_cuda_home}, torch CUDA {torch.version.cuda})")
    return CUDAExtension(
        "torchlstm._C",
        cpp + cu,
        define_macros=[("TORCHLSTM_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
