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
import subprocess
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
    "csrc/layer_call.cpp",
    "csrc/cuda/plan_bindings.cpp",
    "csrc/layer_grads.cpp",
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

INCLUDE = os.path.join(ROOT, "csrc", "cuda_emu", "include")
objects = []
if TSAN:
    # The scheduler (runtime.cpp: no torch headers) is compiled without instrumentation:
    # its bookkeeping crosses fibers by design. It annotates the kernels' synchronisation
    # (barriers, grid.sync, launch start and end) for ThreadSanitizer instead.
    SOURCES.remove("csrc/cuda_emu/runtime.cpp")
    obj_dir = os.path.join("build", "cuda_emu_tsan")
    os.makedirs(obj_dir, exist_ok=True)
    runtime_o = os.path.join(obj_dir, "runtime_uninstrumented.o")
    cmd = [os.environ.get("CXX", "g++"), "-std=c++17", "-O2", "-g", "-fPIC", "-fvisibility=hidden",
           "-DTORCHLSTM_CUDA_EMULATION", "-DTORCHLSTM_EMU_TSAN", "-I", INCLUDE,
           "-c", "csrc/cuda_emu/runtime.cpp", "-o", runtime_o]
    print(" ".join(cmd))
    subprocess.check_call(cmd)
    objects.append(runtime_o)

ext = CppExtension(
    "torchlstm._cuda_emu",
    SOURCES,
    # first on the include path: the emulated cuda_runtime.h, cublas_v2.h, ATen/cuda, c10/cuda
    include_dirs=[INCLUDE],
    extra_compile_args={"cxx": flags},
    extra_link_args=link,
    extra_objects=objects,
)

print(f"torchlstm: building torchlstm._cuda_emu{' (ThreadSanitizer)' if TSAN else ''}")
setup(
    name="torchlstm-cuda-emu",
    script_args=["build_ext", "--inplace",
                 "--build-temp", os.path.join("build", "cuda_emu_tsan" if TSAN else "cuda_emu")],
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
