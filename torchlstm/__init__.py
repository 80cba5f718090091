"""torchlstm: a fused C++/CUDA LSTM for PyTorch.

Drop-in for ``torch.nn.LSTM`` / ``torch.nn.LSTMCell`` (same constructor, parameters,
state_dict, inputs and outputs), with the Keras options PyTorch lacks.

    LSTMCell  the step (the heart): one fused kernel computes the gates and the cell update
    LSTM      the sequence (the shell): runs the cell's maths over time in C++/CUDA
    RNN       Keras' RNN(LSTMCell(n)): a cell run over a sequence by the same fused op
"""
from . import _ops  # noqa: F401  (registers the ops' fake kernels and autograd)
from . import activations
from .cell import LSTMCell
from .lstm import LSTM
from .rnn import RNN
from . import keras_weights  # noqa: E402  (needs the modules above)

__all__ = ["LSTM", "LSTMCell", "RNN", "activations", "keras_weights"]
__version__ = "0.1.0"
