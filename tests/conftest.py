import os

# Inductor's on-disk caches key on the graph, not on this extension's fake kernels: a
# stale entry from an earlier build would be reused. Tests always compile afresh.
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import importlib

import pytest
import torch

from torchlstm import _C, _ops
from support import to_device



@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


_EMULATION_REGISTERED: list = []


class CudaCode:
    """Where the CUDA code runs: its ops, where their tensors live, and its path switch."""

    def __init__(self, where: str):
        self.where = where
        if where == "gpu":
            self.ops, self.device, self.control = torch.ops.torchlstm, "cuda", _C
        else:
            self.control = importlib.import_module("torchlstm._cuda_emu")
            self.control.set_device("h100")
            self.control.set_capture_status("none")
            if not _EMULATION_REGISTERED:  # its ops' autograd, as torchlstm's own
                _ops.register("torchlstm_emu")
                _EMULATION_REGISTERED.append(True)
            self.ops, self.device = torch.ops.torchlstm_emu, "cpu"

    def to(self, args, dtype=None):
        return to_device(args, self.device, dtype)

    def set_path(self, path):
        self.control.set_cuda_forward_path(path)

    def last_path(self):
        return self.control.last_cuda_forward_path()


def _emulation_built():
    return importlib.util.find_spec("torchlstm._cuda_emu") is not None


@pytest.fixture(params=["gpu", "emulation"])
def cuda(request):
    """Where the CUDA code runs (tests/test_cuda_code.py, test_variants.py): a GPU, or the
    CPU emulation; torch.empty NaN-filled (an unwritten output shows), TF32 off."""
    if request.param == "gpu" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (the emulation runs these cases)")
    if request.param == "emulation" and not _emulation_built():
        pytest.skip("torchlstm._cuda_emu not built (make test builds it)")
    code = CudaCode(request.param)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield code
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.utils.deterministic.fill_uninitialized_memory = saved[3]
        code.set_path("auto")
