"""torchlstm: a fused C++/CUDA LSTM for PyTorch.

Drop-in for ``torch.nn.LSTM`` / ``torch.nn.LSTMCell`` (same constructor, parameters,
state_dict, inputs and outputs), with the Keras options PyTorch lacks.

    LSTM      the sequence: each layer and direction one fused op, over time in C++/CUDA
    LSTMCell  one step: the same op over a sequence of one
    RNN       Keras' RNN(LSTMCell(n)): a cell run over a sequence by the same fused op
"""
from . import _ops  # noqa: F401  (registers the ops' fake kernels and autograd)
from . import activations
from .cell import LSTMCell
from .lstm import LSTM
from .rnn import RNN
from . import keras_weights  # noqa: E402  (needs the modules above)
from . import _onnx  # noqa: E402  (ONNX export: registers lazily, on torch.onnx's first use)

from . import _C


def _load_openblas():
    """Hands the scipy-openblas32 wheel's library to the CPU kernels (the large backward
    GEMMs run on it where it is faster: csrc/cpu/large_gemm.h). Without the wheel they
    run on torch's own BLAS."""
    try:
        import scipy_openblas32
    except ImportError:
        return False
    import os
    lib = os.path.join(scipy_openblas32.get_lib_dir(), "lib" + scipy_openblas32.get_library() + ".so")
    return os.path.exists(lib) and _C.cpu_load_openblas(lib)


_load_openblas()


def empty_cache() -> int:
    """Frees the CPU buffers torchlstm keeps for reuse and returns the bytes freed.

    The CPU kernels take their large buffers (outputs, saved gates and cell states,
    gradients; 1 MiB and more) from a cache, so that a training loop reuses the same
    memory every iteration instead of page-faulting it in afresh (csrc/cpu/host_cache.h).
    A buffer returns to the cache when no tensor holds it any more. The cache keeps at
    most ``TORCHLSTM_CPU_CACHE_MB`` MiB (default 1024; 0 turns it off). Like
    ``torch.cuda.empty_cache()``, this is only needed to hand memory back between phases
    of a program."""
    return _C.empty_cpu_cache()


onnx_translation_table = _onnx.translation_table

__all__ = ["LSTM", "LSTMCell", "RNN", "activations", "empty_cache", "keras_weights",
           "onnx_translation_table"]
__version__ = "0.1.0"

_onnx.install()
