"""Builds torchlstm._cuda_emu: the REAL csrc/cuda sources (host code and kernels),
compiled by the host compiler against the CUDA emulation in csrc/cuda_emu, registered as
torch.ops.torchlstm_emu.* for CPU tensors. Independent of setup.py's torchlstm._C build.

    python csrc/cuda_emu/build.py            # torchlstm/_cuda_emu*.so
    EMU_TSAN=1 python csrc/cuda_emu/build.py # the same with -fsanitize=thread (run with
                                             # LD_PRELOAD=$(gcc -print-file-name=libtsan.so))
MAX_JOBS bounds the compiler processes (ninja), as for setup.py.
"""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(ROOT)
sys.path.insert(0, ROOT)

from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension  # noqa: E402

TSAN = os.environ.get("EMU_TSAN", "0") not in ("", "0")

SOURCES = sorted(glob.glob("csrc/cuda_emu/*.cpp")) + [
    # what the CUDA host code shares with the CPU backend (not ops.cpp: its TORCH_LIBRARY
    # is torchlstm._C's)
    "csrc/lstm_args.cpp",
    "csrc/layer_common.cpp",
    "csrc/cpu/host_cache.cpp",
]

flags = [
    "-fvisibility=hidden",
    "-Wno-unknown-pragmas",  # #pragma unroll
    "-DTORCHLSTM_CUDA_EMULATION",
    "-DTORCHLSTM_CUDA_NAMESPACE=torchlstm_emu",
    "-DTORCHLSTM_CUDA_DISPATCH_KEY=CPU",
]
link = []
if TSAN:
    flags += ["-O1", "-g", "-fsanitize=thread"]
    link += ["-fsanitize=thread"]
else:
    flags += ["-O2"]

ext = CppExtension(
    "torchlstm._cuda_emu",
    SOURCES,
    # first on the include path: the emulated cuda_runtime.h, cublas_v2.h, ATen/cuda, c10/cuda
    include_dirs=[os.path.join(ROOT, "csrc", "cuda_emu", "include")],
    extra_compile_args={"cxx": flags},
    extra_link_args=link,
)

print(f"torchlstm: building torchlstm._cuda_emu{' (ThreadSanitizer)' if TSAN else ''}")
setup(
    name="torchlstm-cuda-emu",
    script_args=["build_ext", "--inplace",
                 "--build-temp", os.path.join("build", "cuda_emu_tsan" if TSAN else "cuda_emu")],
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
