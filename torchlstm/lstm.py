"""torchlstm.LSTM: the sequence, drop-in for torch.nn.LSTM, plus Keras options."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _init, _keras_contract, _packed, _script
from ._ops import LayerWeights
from ._options import (CellOptionAttributes, CellOptions, KerasOptionAttributes, KerasOptions,
                       SeededGenerator, check_rnn_args)
from ._stack import autocast_dtype, run_stack


def check_parameters(module: nn.Module, names, x: Tensor, bias_required: bool) -> None:
    """The parameters ``names`` of ``module``: each a tensor where the input is (nn.LSTM's
    message), none missing. A weight set to None is a TypeError naming it; so is a bias on
    an LSTM built with bias=True, as in nn.LSTM (nn.LSTMCell runs without it: so does
    LSTMCell, bias_required=False)."""
    for name in names:
        if name is None:
            continue
        t = getattr(module, name)
        if t is None:
            if name.startswith(("weight", "ln_")) or bias_required:
                raise TypeError(f"{type(module).__name__}: parameter {name} is None (expected "
                                "a Tensor)")
            continue
        if t.device != x.device:
            raise RuntimeError("Input and parameter tensors are not at the same device, "
                               f"found input tensor at {x.device} and parameter tensor at "
                               f"{t.device}")


class LSTM(CellOptionAttributes, KerasOptionAttributes, nn.Module):
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
    * ``peephole`` (Gers & Schmidhuber 2000; ONNX LSTM's P input): the input and forget
      gates see ``c_{t-1}``, the output gate the new ``c_t`` (the carried state: with
      zoneout its blend): ``a_i += p_i c_{t-1}``, ``a_f += p_f c_{t-1}``, ``a_o += p_o c_t``,
      one parameter ``weight_ch_l{k}`` (3H: p_i, p_f, p_o; ``_reverse`` for the second
      direction), initialised U(-1/sqrt(H), 1/sqrt(H)). Fused in the kernels.
    * ``layer_norm`` (Ba et al. 2016; haste's LayerNormLSTM): per layer and direction
      ``a = LN(W_ih x_t; γ_ih) + LN(W_hh h_{t-1}; γ_hh) + b_ih + b_hh`` (each LN over the
      whole 4H row, a scale and no shift; peephole terms added after it), ``c_t`` as usual
      (carried un-normalised), ``h_t = σ(a_o) act(LN(c_t; γ_c, β_c))`` over H, then the
      projection; ``σ`` / ``act`` are ``recurrent_activation`` / ``activation``. Parameters
      ``ln_weight_ih_l{k}`` (4H), ``ln_weight_hh_l{k}`` (4H), ``ln_weight_c_l{k}`` (H),
      ``ln_bias_c_l{k}`` (H) (``_reverse`` for the second direction), initialised to ones
      and zeros (they draw nothing from the RNG: the other weights are nn.LSTM's for a
      seed). ``layer_norm_eps`` (default 1e-5) is the variance epsilon. Zoneout blends the
      carried (un-normalised) ``c`` and ``h``; a masked step carries both over; LN(c) only
      turns the fresh ``c~`` into ``h~``. Runs the reference loop (not yet fused).
    * ``seed``: an int makes the masks reproducible: the module draws them from its own
      ``torch.Generator`` (on the input's device, seeded once), so the same seed and the
      same calls give the same masks. Without it, the global RNG (``torch.manual_seed``).

    The options are held, validated and immutable, in ``options`` (the cell) and
    ``keras`` (the sequence contract); the attributes of the same names read them.
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
                 seed: Optional[int] = None, peephole: bool = False,
                 layer_norm: bool = False, layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        check_rnn_args(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self.options = CellOptions.make(
            "LSTM", activation, recurrent_activation, input_dropout, recurrent_dropout, zoneout,
            seed, init, unit_forget_bias, peephole, layer_norm, layer_norm_eps)
        self.keras = KerasOptions.make(return_sequences, return_state, go_backwards,
                                       zero_output_for_mask, stateful)
        self.mode = "LSTM"  # as nn.LSTM (code that inspects RNNBase modules reads it)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self._state: Optional[tuple[Tensor, Tensor]] = None  # carried by stateful=True
        self._rng = SeededGenerator(self.options.seed)

        factory = {"device": device, "dtype": dtype}
        num_directions = 2 if bidirectional else 1
        real_hidden = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        self._weight_names: list[tuple] = []  # per (layer, direction): LayerWeights' names
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else real_hidden * num_directions
                suffix = "_reverse" if direction == 1 else ""
                shapes = {"weight_ih": (4 * hidden_size, layer_input),
                          "weight_hh": (4 * hidden_size, real_hidden)}
                if bias:
                    shapes.update(bias_ih=(4 * hidden_size,), bias_hh=(4 * hidden_size,))
                if proj_size > 0:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                if peephole:
                    shapes["weight_ch"] = (3 * hidden_size,)
                if layer_norm:
                    shapes.update(ln_weight_ih=(4 * hidden_size,), ln_weight_hh=(4 * hidden_size,),
                                  ln_weight_c=(hidden_size,), ln_bias_c=(hidden_size,))
                names = []
                for base, shape in shapes.items():
                    name = f"{base}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
                self._weight_names.append(tuple(
                    f"{base}_l{layer}{suffix}" if base in shapes else None
                    for base in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr",
                                 "weight_ch", "ln_weight_ih", "ln_weight_hh", "ln_weight_c",
                                 "ln_bias_c")))
        self.reset_parameters()


    # ------------------------------------------------------------------ nn.LSTM API
    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation (U(-1/sqrt(H), 1/sqrt(H)) for every parameter, in
        registration order: one seed gives nn.LSTM's exact weights), or Keras' with
        init="keras"; then unit_forget_bias if asked."""
        _init.apply(self, self.layer_weights(), self.hidden_size, self.options.init,
                    self.options.unit_forget_bias)

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op: kept for drop-in compatibility (the fused kernels need no flat buffer)."""

    def layer_weights(self) -> list[LayerWeights]:
        """The parameters of each (layer, direction), k = layer * D + direction, looked up
        by name on every call so that load_state_dict, functional_call and replaced
        parameters are honoured."""
        return [LayerWeights(*(getattr(self, n) if n else None for n in names))
                for names in self._weight_names]

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
        s += self.options.repr_activations()
        k = self.keras
        if k.return_sequences is not None:
            s += f", return_sequences={k.return_sequences}"
        if k.return_state is not None:
            s += f", return_state={k.return_state}"
        return s + k.repr() + self.options.repr_rest()

    def __prepare_scriptable__(self):
        """torch.jit.script compiles a twin sharing these parameters (torchlstm/_script.py)."""
        return _script.scriptable_lstm(self)

    def reset_states(self) -> None:
        """Forget the state a stateful LSTM carries between calls (Keras' reset_states)."""
        self._state = None

    # ------------------------------------------------------------------ checks
    def _check_input(self, input: Tensor, expected_dim: int) -> None:
        check_parameters(self, self._flat_weights_names, input, self.bias)
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

    def _hidden(self, hx, x: Tensor, batched: bool, permutation: Optional[Tensor]):
        """(h0, c0) as (L*D, B, ·) tensors: zeros, or hx checked as nn.LSTM does."""
        D = 2 if self.bidirectional else 1
        B = x.shape[1]
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        h_shape = (self.num_layers * D, B, real_hidden)
        c_shape = (self.num_layers * D, B, self.hidden_size)
        if hx is None and self.keras.stateful and self._state is not None:
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
        k = self.keras
        unbatched_dim = None  # batch axis to squeeze away for unbatched input
        keras_mask = None
        packed = isinstance(input, PackedSequence)
        if packed:
            if mask is not None or k.go_backwards:
                raise ValueError("mask and go_backwards are for padded tensors; a "
                                 "PackedSequence already says which steps are valid")
            self._check_input(input.data, 2)
            x, mask = _packed.unpack(input)
            h0, c0 = self._hidden(hx, x, True, input.sorted_indices)
        else:
            if not isinstance(input, Tensor):
                raise TypeError("LSTM: input must be a Tensor or a PackedSequence, got "
                                f"{type(input).__name__}")
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
                keras_mask = _keras_contract.check_mask(mask, x, self.batch_first, batched)
            if k.go_backwards:  # Keras: process reversed, outputs in processing order
                x = x.flip(0)
                keras_mask = keras_mask.flip(0) if keras_mask is not None else None
            mask = keras_mask
            h0, c0 = self._hidden(hx, x, batched, None)
        out, h_n, c_n = run_stack(
            x, h0, c0, self.layer_weights(), self.num_layers, D, mask, self.options, self.dropout,
            self.training, self._rng.get(x.device, self.options.draws(self.training)))

        last = None  # the Keras last output, where it is not simply the final h
        if packed:
            output = _packed.pack_like(out, mask, input)
            if input.unsorted_indices is not None:
                h_n = h_n.index_select(1, input.unsorted_indices)
                c_n = c_n.index_select(1, input.unsorted_indices)
        else:
            if keras_mask is not None:
                out, last = _keras_contract.masked_and_last(out, keras_mask, D,
                                                            k.zero_output_for_mask)
                if unbatched_dim is not None:
                    last = last.squeeze(0)
            output = out.transpose(0, 1) if self.batch_first else out
            if unbatched_dim is not None:
                output = output.squeeze(unbatched_dim)

        if k.stateful:  # the next call starts from here (no gradient across calls)
            self._state = (h_n.detach(), c_n.detach())
        if k.keras_result:
            return _keras_contract.keras_result(output, h_n, c_n, D, bool(k.return_sequences),
                                                bool(k.return_state), unbatched_dim, last)
        if unbatched_dim is not None:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)
