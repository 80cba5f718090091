"""torchlstm.keras: Keras 3 layers (torch backend) computed by torchlstm's fused kernels.

Put them where ``keras.layers.LSTM`` / ``LSTMCell`` / ``RNN`` were::

    import os; os.environ["KERAS_BACKEND"] = "torch"
    import keras
    from torchlstm.keras import LSTM

    model = keras.Sequential([keras.Input((None, 128)), LSTM(256), keras.layers.Dense(10)])

The classes ARE Keras' own (``torchlstm.keras.LSTM`` subclasses ``keras.layers.LSTM``,
``LSTMCell`` ``keras.layers.LSTMCell``, ``RNN`` ``keras.layers.RNN``): the same
constructor and defaults, the same weights (``kernel`` (in, 4u), ``recurrent_kernel``
(u, 4u), ``bias`` (4u), gates i, f, c, o, created by Keras' initializers, regularizers
and constraints, saved under the same paths), the same masking, ``compute_mask``,
``return_sequences`` / ``return_state`` / ``go_backwards`` / ``stateful`` /
``reset_state()``, ``get_config`` / ``from_config`` and ``Bidirectional`` support. Only
the loop over time differs: Keras steps a Python cell (or a per-step matmul loop); here
one torchlstm op runs the whole sequence (``torch.ops.torchlstm.layer_forward``, C++ on
the CPU, CUDA on the GPU), with w_ih = kernel.T, w_hh = recurrent_kernel.T, b_ih = bias,
and gradients reach the Keras variables through torch autograd.

Differences from Keras, by design:

* ``recurrent_dropout > 0``: Keras' cell then draws four input masks and four recurrent
  masks, one per gate; the fused op takes one of each, so the four gates share Keras'
  first mask (the same rate, drawn from the same seed generator). With ``dropout`` only,
  the mask is exactly Keras' (same seed, same numbers).
* ``unroll`` and ``use_cudnn`` are accepted and kept in the config; the fused op runs
  either way.
* An activation that is not one of Keras' element-wise built-ins (a custom function)
  runs Keras' own loop (correct, not fused), with a warning.

Importing ``torchlstm`` does not import Keras; importing ``torchlstm.keras`` does, and
needs Keras 3 on the torch backend (``pip install torchlstm[keras]``, then
``KERAS_BACKEND=torch``).
"""
from __future__ import annotations

import json
import os
import sys
import warnings


def _configured_backend() -> str:
    """The backend Keras will pick (or has picked), without importing Keras when it has
    not been imported: KERAS_BACKEND, else keras.json, else Keras' default."""
    if "keras" in sys.modules:
        try:
            return sys.modules["keras"].backend.backend()
        except AttributeError:  # a half-imported keras: let the import below decide
            pass
    if "KERAS_BACKEND" in os.environ:
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


_BACKEND_ERROR = (
    "torchlstm.keras needs Keras 3 running on its torch backend, but the Keras backend is "
    "{backend!r}. Set the environment variable KERAS_BACKEND=torch before Keras is first "
    "imported (or \"backend\": \"torch\" in ~/.keras/keras.json).")

_backend = _configured_backend()
if _backend != "torch":
    raise ImportError(_BACKEND_ERROR.format(backend=_backend))
try:
    import keras
except ImportError as e:
    raise ImportError("torchlstm.keras needs Keras 3: pip install torchlstm[keras] "
                      "(or pip install 'keras>=3')") from e
if not hasattr(keras, "version") or int(keras.version().split(".")[0]) < 3:
    raise ImportError(f"torchlstm.keras needs Keras 3, found {getattr(keras, '__version__', '?')}")
if keras.backend.backend() != "torch":  # keras already imported with another backend
    raise ImportError(_BACKEND_ERROR.format(backend=keras.backend.backend()))

import torch  # noqa: E402

from . import _keras_contract, activations as _activations  # noqa: E402
from ._ops import NO_REGULARIZERS, LayerRegularizers, LayerWeights, run_layer  # noqa: E402

_convert = keras.ops.convert_to_tensor


def _fused_ids() -> dict:
    """Keras' activation functions that are exactly a fused activation -> kernel id."""
    table = {}
    for name in _activations.names():
        fn = getattr(keras.activations, name, None)
        if fn is not None:
            table[fn] = _activations.resolve(name)
    table[keras.activations.get(None)] = _activations.resolve(None)  # linear
    return table


_FUSED_IDS = _fused_ids()


def _kernel_ids(cell):
    """(activation id, recurrent activation id) of a Keras LSTMCell, or None when either
    is not a fused activation."""
    def kernel_id(fn):
        try:
            if fn in _FUSED_IDS:
                return _FUSED_IDS[fn]
        except TypeError:  # an unhashable callable
            return None
        try:  # torch functions that are a fused activation (torch.tanh, F.relu, ...)
            return _activations.resolve(fn)
        except (TypeError, ValueError):
            return None
    ids = kernel_id(cell.activation), kernel_id(cell.recurrent_activation)
    return None if None in ids else ids


def _first(mask):
    """Keras' cell keeps one dropout mask, or four (one per gate) with recurrent_dropout."""
    return mask[0] if isinstance(mask, (list, tuple)) else mask


def _fused_inner_loop(layer, cell, sequences, initial_state, mask, training):
    """keras.layers.RNN.inner_loop for an LSTMCell, by one torchlstm op: returns
    (last_output (B,u), outputs (B,T,u), [h (B,u), c (B,u)]) as Keras' backend.rnn does,
    or None when the cell's activations are not fused (the caller runs Keras' loop)."""
    ids = _kernel_ids(cell)
    if ids is None:
        if not getattr(layer, "_torchlstm_warned", False):
            layer._torchlstm_warned = True
            warnings.warn(
                f"torchlstm.keras: {layer.name} has an activation that is not one of Keras' "
                f"element-wise built-ins ({', '.join(_activations.names())}): it runs "
                "Keras' own (unfused) loop.", UserWarning, stacklevel=4)
        return None
    if isinstance(mask, (list, tuple)):  # Keras passes one mask per input at times
        mask = mask[0]
    kernel = _convert(cell.kernel)
    recurrent_kernel = _convert(cell.recurrent_kernel)
    bias = _convert(cell.bias) if cell.use_bias else None
    dtype = kernel.dtype
    x = _convert(sequences).to(dtype)
    h0 = _convert(initial_state[0]).to(dtype)
    c0 = _convert(initial_state[1]).to(dtype)
    if layer.stateful:  # the state variables, assigned after this call: the op saves copies
        h0, c0 = h0.clone(), c0.clone()
    if x.shape[1] == 0:
        raise ValueError(f"{layer.name}: the input sequence has no time steps")
    xt = x.transpose(0, 1)  # time-major (T, B, I) for the op
    m = None
    if mask is not None:
        mask = _convert(mask)
        if mask.dtype != torch.bool:
            mask = mask.to(torch.bool)
        m = _keras_contract.check_mask(mask, xt, True, True)  # (T, B)
    if layer.go_backwards:  # Keras: process reversed, outputs in processing order
        xt = xt.flip(0)
        m = m.flip(0) if m is not None else None
    reg = NO_REGULARIZERS
    if training:
        ik = rk = None
        if 0.0 < cell.dropout < 1.0:  # the masks Keras' RNN.call drew for this call
            ik = _first(cell.get_dropout_mask(x[:, 0, :]))
        if 0.0 < cell.recurrent_dropout < 1.0:
            rk = _first(cell.get_recurrent_dropout_mask(h0))
        if ik is not None or rk is not None:
            reg = LayerRegularizers(None if ik is None else _convert(ik).to(dtype),
                                    None if rk is None else _convert(rk).to(dtype))
    weights = LayerWeights(kernel.t(), recurrent_kernel.t(), bias, None, None)
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, kernel, recurrent_kernel, bias))
    out, h, c = run_layer(xt, h0, c0, weights, mask=m, reverse=False, activation=ids[0],
                          recurrent_activation=ids[1], reg=reg, need_grad=need_grad)
    if m is not None:
        out, last = _keras_contract.masked_and_last(out, m, 1, layer.zero_output_for_mask)
    else:  # the final h: its gradient enters the op as grad_hn, at no cost (out[-1]'s
        last = h  # would be a zero-filled (T, B, u) gradient for the whole output)
    return last, out.transpose(0, 1), [h, c]


_register = keras.saving.register_keras_serializable(package="torchlstm")


@_register
class LSTMCell(keras.layers.LSTMCell):
    """keras.layers.LSTMCell (same constructor, weights and step ``call``); inside
    :class:`torchlstm.keras.RNN` the whole sequence runs as one fused torchlstm op."""


@_register
class LSTM(keras.layers.LSTM):
    """keras.layers.LSTM, every argument and default the same, computed by torchlstm's
    fused op (see the module docstring for the few differences)."""

    def __init__(self, units, *args, use_cudnn="auto", **kwargs):
        super().__init__(units, *args, use_cudnn=use_cudnn, **kwargs)
        # keras.layers.Bidirectional runs two LSTMs with use_cudnn in (True, "auto") as
        # one cuDNN call, bypassing their own call (Keras' get_config leaves use_cudnn out).
        self._config_use_cudnn = use_cudnn
        self.use_cudnn = False

    def inner_loop(self, sequences, initial_state, mask, training=False):
        result = _fused_inner_loop(self, self.cell, sequences, initial_state, mask, training)
        if result is None:
            self.use_cudnn = self._config_use_cudnn
            try:
                return super().inner_loop(sequences, initial_state, mask, training=training)
            finally:
                self.use_cudnn = False
        return result


@_register
class RNN(keras.layers.RNN):
    """keras.layers.RNN; with a Keras LSTMCell (this module's or Keras' own) the sequence
    runs as one fused torchlstm op, so ``RNN(LSTMCell(n))`` computes what ``LSTM(n)``
    does. Any other cell runs Keras' loop."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(self.cell, keras.layers.LSTMCell):
            result = _fused_inner_loop(self, self.cell, sequences, initial_state, mask,
                                       training)
            if result is not None:
                return result
        return super().inner_loop(sequences, initial_state, mask, training=training)


__all__ = ["LSTM", "LSTMCell", "RNN"]
