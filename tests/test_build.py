"""What was built: every op registered with a CPU kernel, and (in CI, where nvcc exists)
the CUDA build path taken, so a silent CPU-only build fails."""
import os

import pytest
import torch

import torchlstm
from torchlstm import _C

OPS = ["layer_forward", "layer_inference", "layer_backward", "layer_pair_forward",
       "layer_pair_inference", "layer_pair_backward"]


@pytest.mark.parametrize("name", OPS)
def test_op_has_cpu_kernel(name):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"torchlstm::{name}", "CPU")


@pytest.mark.parametrize("name", OPS)
def test_op_has_cuda_kernel(name):
    # Every op has a CUDA kernel wherever the extension was built with CUDA (always in CI:
    # test_cuda_build_path_taken), whether or not a GPU is present.
    if not _C.cuda_build():
        pytest.skip("CPU-only build (no nvcc or a CPU-only torch); CI requires the CUDA build")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"torchlstm::{name}", "CUDA")


def test_ops_are_the_whole_library():
    registered = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
                  if n.startswith("torchlstm::")}
    assert registered == set(OPS)


@pytest.mark.skipif(os.environ.get("TORCHLSTM_EXPECT_CUDA_BUILD") != "1",
                    reason="set by .ci/run where nvcc is present")
def test_cuda_build_path_taken():
    assert torch.version.cuda is not None, "CI must use a CUDA build of torch, not a CPU-only pin"
    assert _C.cuda_build(), "nvcc is present but the extension was built CPU-only"
    for name in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"torchlstm::{name}", "CUDA"), name


def test_cpu_time_loop_calls_blas_directly():
    # torch's x86 wheels export the BLAS they link; elsewhere the at::mm fallback is used.
    if torch.backends.mkl.is_available():
        assert _C.cpu_direct_blas()
        assert _C.cpu_packed_gemm()


def test_version():
    assert torchlstm.__version__
