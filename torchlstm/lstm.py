"""torchlstm.LSTM: the sequence "shell", drop-in for torch.nn.LSTM, plus Keras options."""
from __future__ import annotations

import numbers
import warnings
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _init, activations
from ._sequence import (LayerWeights, autocast_dtype, check_flags, check_mask,
                        configure_regularizers, generator, keras_masked_output, keras_repr,
                        keras_result, last_output, pack_like, regularizers_repr, run_stack,
                        unpack)


def check_keras_flags(return_sequences, return_state):
    for name, value in (("return_sequences", return_sequences), ("return_state", return_state)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} should be None or a bool, got: {type(value).__name__}")


class LSTM(nn.Module):
    r"""A multi-layer LSTM on fused C++/CUDA kernels; drop-in for :class:`torch.nn.LSTM`.

    The constructor, parameters (names, shapes, registration order, initialisation),
    ``state_dict``, inputs (batched, unbatched, ``PackedSequence``) and outputs
    ``(output, (h_n, c_n))`` are nn.LSTM's. Keyword-only Keras options:

    * ``activation`` (default ``"tanh"``): the candidate and the output non-linearity;
      ``recurrent_activation`` (default ``"sigmoid"``): the i, f, o gates. Names from
      :mod:`torchlstm.activations` (Keras 3 spellings), fused in the kernels.
    * ``return_sequences`` / ``return_state``: leave both None for nn.LSTM's return value.
      If either is set the Keras contract holds: the output is the whole sequence
      (``return_sequences=True``) or the last step (B, D*H_out), the final ``h`` of each
      direction of the last layer concatenated; with ``return_state=True`` the module
      returns ``(output, h, c)``, where for one unidirectional layer ``h`` is (B, H_out)
      and ``c`` is (B, H) as in Keras, and otherwise nn.LSTM's (L*D, B, ·) ``h_n``, ``c_n``.
    * ``input_dropout`` (Keras' ``dropout``) and ``recurrent_dropout``, in training mode
      only: each forward call, each layer and each direction draws ONE mask for its input
      features (B, input) and one for the ``h`` fed to the recurrent weights (B, H_out),
      scaled by 1/(1-p) and constant over the sequence (Keras' LSTMCell; the carried
      state itself is not dropped). nn.LSTM's ``dropout`` (between layers) is separate.
    * ``zoneout`` (Krueger et al. 2016): a rate, or a pair ``(h_rate, c_rate)``. Training:
      each step, each unit of ``h`` and of ``c`` keeps its previous value with that
      probability; eval: the blend ``rate * old + (1 - rate) * new``. A masked or padded
      step still carries the state over unchanged.
    * ``seed``: an int makes the masks reproducible: the module draws them from its own
      ``torch.Generator`` (on the input's device, seeded once), so the same seed and the
      same calls give the same masks. Without it, the global RNG (``torch.manual_seed``).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None,
                 *, activation="tanh", recurrent_activation="sigmoid",
                 return_sequences: Optional[bool] = None,
                 return_state: Optional[bool] = None, go_backwards: bool = False,
                 zero_output_for_mask: bool = False, stateful: bool = False,
                 init: str = "torch", unit_forget_bias: bool = False,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0, zoneout=0.0,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        # Validation and messages as torch.nn.RNNBase.
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=2)
        for name, value in (("bias", bias), ("batch_first", batch_first),
                            ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers), ("proj_size", proj_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable "
                             "projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        check_keras_flags(return_sequences, return_state)
        _init.check(init, unit_forget_bias)
        check_flags(go_backwards=go_backwards, zero_output_for_mask=zero_output_for_mask,
                    stateful=stateful)

        self.mode = "LSTM"  # as nn.LSTM (code that inspects RNNBase modules reads it)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        activations.configure(self, activation, recurrent_activation)
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.zero_output_for_mask = zero_output_for_mask
        self.stateful = stateful
        self._state: Optional[tuple[Tensor, Tensor]] = None  # carried by stateful=True
        self.init = init
        self.unit_forget_bias = unit_forget_bias
        configure_regularizers(self, input_dropout, recurrent_dropout, zoneout, seed)

        factory = {"device": device, "dtype": dtype}
        num_directions = 2 if bidirectional else 1
        real_hidden = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else real_hidden * num_directions
                suffix = "_reverse" if direction == 1 else ""
                shapes = [("weight_ih", (4 * hidden_size, layer_input)),
                          ("weight_hh", (4 * hidden_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (4 * hidden_size,)), ("bias_hh", (4 * hidden_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for base, shape in shapes:
                    name = f"{base}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        # per (layer, direction): the names of the LayerWeights fields, None where absent
        self._weight_names = [
            tuple(next((n for n in names if n.startswith(f + "_l")), None)
                  for f in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))
            for names in self._all_weights]
        self.reset_parameters()

    # ------------------------------------------------------------------ nn.LSTM API
    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation (U(-1/sqrt(H), 1/sqrt(H)) for every parameter, in
        registration order: one seed gives nn.LSTM's exact weights), or Keras' with
        init="keras"; then unit_forget_bias if asked."""
        _init.apply(self, self._layer_weights(), self.hidden_size, self.init,
                    self.unit_forget_bias)

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op: kept for drop-in compatibility (the fused kernels need no flat buffer)."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self.activation != "tanh":
            s += f", activation={self.activation!r}"
        if self.recurrent_activation != "sigmoid":
            s += f", recurrent_activation={self.recurrent_activation!r}"
        if self.return_sequences is not None:
            s += f", return_sequences={self.return_sequences}"
        if self.return_state is not None:
            s += f", return_state={self.return_state}"
        s += keras_repr(self)
        if self.init != "torch":
            s += f", init={self.init!r}"
        if self.unit_forget_bias:
            s += ", unit_forget_bias=True"
        return s + regularizers_repr(self)

    def reset_states(self) -> None:
        """Forget the state a stateful LSTM carries between calls (Keras' reset_states)."""
        self._state = None

    def _layer_weights(self) -> list[LayerWeights]:
        """The parameters of each (layer, direction), looked up by name on every call so
        that load_state_dict, functional_call and replaced parameters are honoured."""
        return [LayerWeights(*(getattr(self, n) if n else None for n in names))
                for names in self._weight_names]

    # ------------------------------------------------------------------ checks
    def _check_input(self, input: Tensor, expected_dim: int) -> None:
        w = self.weight_ih_l0
        if input.dtype != w.dtype and autocast_dtype(input) is None:  # autocast: cast later
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({w.dtype}). "
                f"Convert input: input.to({w.dtype}), or convert model: model.to({input.dtype})")
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if input.size(-1) != self.input_size:
            raise RuntimeError("input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {input.size(-1)}")
        if input.device != w.device:
            raise RuntimeError(f"input is on {input.device} but the LSTM's parameters are on "
                               f"{w.device}; move one of them")

    def _hidden(self, hx, x: Tensor, batched: bool, permutation: Optional[Tensor]):
        """(h0, c0) as (L*D, B, ·) tensors: zeros, or hx checked as nn.LSTM does."""
        D = 2 if self.bidirectional else 1
        B = x.shape[1]
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        h_shape = (self.num_layers * D, B, real_hidden)
        c_shape = (self.num_layers * D, B, self.hidden_size)
        if hx is None and self.stateful and self._state is not None:
            h0, c0 = self._state  # the last call's final states, in the caller's batch order
            if h0.shape != h_shape:
                raise ValueError(f"stateful LSTM: the state carried from the last call has "
                                 f"shape {tuple(h0.shape)}, this batch needs {h_shape}; call "
                                 "reset_states() to start new sequences")
            if permutation is not None:
                h0, c0 = h0.index_select(1, permutation), c0.index_select(1, permutation)
            return h0, c0
        if hx is None:
            return x.new_zeros(h_shape), x.new_zeros(c_shape)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2 or not all(
                isinstance(t, Tensor) for t in hx):
            raise TypeError("hx must be a tuple (h_0, c_0) of two tensors")
        h0, c0 = hx
        if batched:
            if h0.dim() != 3 or c0.dim() != 3:
                raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but got "
                                   f"({h0.dim()}-D, {c0.dim()}-D) tensors")
        else:
            if h0.dim() != 2 or c0.dim() != 2:
                raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but "
                                   f"got ({h0.dim()}-D, {c0.dim()}-D) tensors")
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        if h0.shape != h_shape:
            raise RuntimeError(f"Expected hidden[0] size {h_shape}, got {list(h0.shape)}")
        if c0.shape != c_shape:
            raise RuntimeError(f"Expected hidden[1] size {c_shape}, got {list(c0.shape)}")
        for i, t in enumerate((h0, c0)):
            if (t.dtype != x.dtype and autocast_dtype(x) is None) or t.device != x.device:
                raise RuntimeError(f"hx[{i}] must have the dtype and device of input "
                                   f"({x.dtype}, {x.device}), got ({t.dtype}, {t.device})")
        if permutation is not None:
            h0, c0 = h0.index_select(1, permutation), c0.index_select(1, permutation)
        return h0, c0

    # ------------------------------------------------------------------ forward
    def forward(self, input, hx=None, mask=None):
        """nn.LSTM's forward; ``mask`` (Keras): bool, True = a valid step, shaped like the
        input without its features ((B, T) with batch_first, (T, B) without, (T,) for
        unbatched input). At a masked step h and c carry over and the output repeats the
        previous output (zeros with ``zero_output_for_mask``), as in Keras."""
        D = 2 if self.bidirectional else 1
        unbatched_dim = None  # batch axis to squeeze away for unbatched input
        keras_mask = None
        if isinstance(input, PackedSequence):
            if mask is not None or self.go_backwards:
                raise ValueError("mask and go_backwards are for padded tensors; a "
                                 "PackedSequence already says which steps are valid")
            self._check_input(input.data, 2)
            x, mask = unpack(input)
            h0, c0 = self._hidden(hx, x, True, input.sorted_indices)
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D "
                                 "instead")
            self._check_input(input, input.dim())
            batched = input.dim() == 3
            if not batched:
                unbatched_dim = 0 if self.batch_first else 1
                input = input.unsqueeze(unbatched_dim)
            x = input.transpose(0, 1) if self.batch_first else input
            if mask is not None:
                keras_mask = check_mask(mask, x, self.batch_first, batched)
            if self.go_backwards:  # Keras: process reversed, outputs in processing order
                x = x.flip(0)
                keras_mask = keras_mask.flip(0) if keras_mask is not None else None
            mask = keras_mask
            h0, c0 = self._hidden(hx, x, batched, None)

        out, h_n, c_n = run_stack(x, h0, c0, self._layer_weights(), self.num_layers, D, mask,
                                  self._activation_id, self._recurrent_activation_id,
                                  self.dropout, self.training, self._regularizers,
                                  generator(self, x.device))

        last = None  # the Keras last output, where it is not simply the final h
        if isinstance(input, PackedSequence):
            output = pack_like(out, mask, input)
            if input.unsorted_indices is not None:
                h_n = h_n.index_select(1, input.unsorted_indices)
                c_n = c_n.index_select(1, input.unsorted_indices)
        else:
            if keras_mask is not None:
                out = keras_masked_output(out, keras_mask, D, self.zero_output_for_mask)
                last = last_output(out, D)
                if unbatched_dim is not None:
                    last = last.squeeze(0)
            output = out.transpose(0, 1) if self.batch_first else out
            if unbatched_dim is not None:
                output = output.squeeze(unbatched_dim)

        if self.stateful:  # the next call starts from here (no gradient across calls)
            self._state = (h_n.detach(), c_n.detach())
        if self.return_sequences is not None or self.return_state is not None:
            return keras_result(output, h_n, c_n, D, bool(self.return_sequences),
                                bool(self.return_state), unbatched_dim, last)
        if unbatched_dim is not None:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)
