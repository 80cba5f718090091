"""torchlstm.LSTMCell: one LSTM step, drop-in for torch.nn.LSTMCell.

A step is the layer op over a sequence of one (torch.ops.torchlstm.layer_forward with
T = 1): the same fused kernels, the same gradients, no separate cell op to keep equal.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _init, _script
from ._ops import LayerWeights
from ._options import CellOptionAttributes, CellOptions, SeededGenerator, check_cell_sizes
from ._stack import autocast_dtype, run_stack
from .lstm import check_parameters


class LSTMCell(CellOptionAttributes, nn.Module):
    r"""One LSTM step on the fused kernel; drop-in for :class:`torch.nn.LSTMCell`.

    Same constructor, parameters (``weight_ih`` (4H, I), ``weight_hh`` (4H, H),
    ``bias_ih``, ``bias_hh``), initialisation and ``forward(input, hx=None) -> (h_1, c_1)``
    with 1-D (unbatched) or 2-D input. Keyword-only ``activation`` /
    ``recurrent_activation`` as in Keras' LSTMCell. Wrap it in :class:`torchlstm.RNN` to
    run it over a sequence (fused: no Python loop over time).

    ``peephole=True`` adds peephole connections (``weight_ch`` (3H): p_i, p_f, p_o; see
    :class:`torchlstm.LSTM`). ``layer_norm=True`` (``layer_norm_eps``) is the
    layer-normalised cell of :class:`torchlstm.LSTM` (``ln_weight_ih``, ``ln_weight_hh``
    (4H), ``ln_weight_c``, ``ln_bias_c`` (H)). ``input_dropout``, ``recurrent_dropout``, ``zoneout`` and
    ``seed`` are
    :class:`torchlstm.LSTM`'s. They are meant for ``RNN(cell)``, which draws the dropout
    masks once per sequence. A cell called on its own cannot know where a sequence starts,
    so in training mode each call draws FRESH masks (input, recurrent, zoneout), i.e. a
    new dropout mask every step, unlike Keras, which keeps a cell's masks until they are
    reset; in eval mode there is no dropout and zoneout is the ``rate`` blend.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, *, activation="tanh", recurrent_activation="sigmoid",
                 init: str = "torch", unit_forget_bias: bool = False,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0, zoneout=0.0,
                 seed=None, peephole: bool = False, layer_norm: bool = False,
                 layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        check_cell_sizes(input_size, hidden_size)
        self.options = CellOptions.make(
            "LSTMCell", activation, recurrent_activation, input_dropout, recurrent_dropout,
            zoneout, seed, init, unit_forget_bias, peephole, layer_norm, layer_norm_eps)
        self._rng = SeededGenerator(self.options.seed)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty((4 * hidden_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((4 * hidden_size, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if peephole:
            self.weight_ch = nn.Parameter(torch.empty(3 * hidden_size, **factory))
        if layer_norm:
            self.ln_weight_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.ln_weight_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.ln_weight_c = nn.Parameter(torch.empty(hidden_size, **factory))
            self.ln_bias_c = nn.Parameter(torch.empty(hidden_size, **factory))
        self.reset_parameters()


    def reset_parameters(self) -> None:
        """nn.LSTMCell's initialisation, or Keras' with init="keras" (see torchlstm.LSTM)."""
        if self.hidden_size == 0:  # nothing to initialise (nn accepts the size)
            return
        _init.apply(self, self.layer_weights(), self.hidden_size, self.options.init,
                    self.options.unit_forget_bias)

    def layer_weights(self) -> list[LayerWeights]:
        """The cell's parameters as the one layer RNN(cell) runs."""
        ln = ((self.ln_weight_ih, self.ln_weight_hh, self.ln_weight_c, self.ln_bias_c)
              if self.options.layer_norm else ())
        return [LayerWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None,
                             self.weight_ch if self.options.peephole else None, *ln)]

    def generator(self, device: torch.device):
        """The generator of this cell's masks for a call on ``device`` (None: global RNG)."""
        return self._rng.get(device, self.options.draws(self.training))

    def __prepare_scriptable__(self):
        """torch.jit.script compiles a twin sharing these parameters (torchlstm/_script.py)."""
        return _script.scriptable_cell(self)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        return s + self.options.repr_activations() + self.options.repr_rest()

    def check_input(self, input: Tensor) -> None:
        """dtype, device and feature size of a (batch, input_size) input."""
        ln = (("ln_weight_ih", "ln_weight_hh", "ln_weight_c", "ln_bias_c")
              if self.options.layer_norm else ())
        check_parameters(self, ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                "weight_ch" if self.options.peephole else None, *ln), input,
                         False)
        w = self.weight_ih
        if input.dtype != w.dtype and autocast_dtype(input) is None:  # autocast: cast later
            raise ValueError(f"LSTMCell input dtype ({input.dtype}) does not match weight dtype "
                             f"({w.dtype})")
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(-1)} "
                               f"expected {self.input_size}")

    def check_state(self, t: Tensor, index: int, batch: int, like: Tensor) -> None:
        if t.size(0) != batch:
            raise RuntimeError(f"Input batch size {batch} doesn't match hidden{index} batch "
                               f"size {t.size(0)}")
        if t.size(1) != self.hidden_size:
            raise RuntimeError(f"hidden{index} has inconsistent hidden_size: got {t.size(1)}, "
                               f"expected {self.hidden_size}")
        if (t.dtype != like.dtype and autocast_dtype(like) is None) or t.device != like.device:
            raise RuntimeError(f"hx[{index}] must have the dtype and device of input "
                               f"({like.dtype}, {like.device}), got ({t.dtype}, {t.device})")

    def forward(self, input: Tensor, hx=None):
        if not isinstance(input, Tensor):
            raise TypeError(f"LSTMCell: input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D "
                             "instead")
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2 or not all(
                    isinstance(t, Tensor) for t in hx):
                raise TypeError("hx must be a tuple (h_0, c_0) of two tensors")
            for idx, value in enumerate(hx):
                if value.dim() != input.dim():
                    raise ValueError(f"LSTMCell: Expected hx[{idx}] to be {input.dim()}D like "
                                     f"input, got {value.dim()}D instead")
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        self.check_input(input)
        B = input.size(0)
        if hx is None:
            h0 = c0 = input.new_zeros(B, self.hidden_size)
        else:
            h0, c0 = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
            self.check_state(h0, 0, B, input)
            self.check_state(c0, 1, B, input)
        if self.hidden_size == 0:  # nn.LSTMCell's empty state
            h, c = h0 + 0, c0 + 0
        else:  # one step of the layer op (dropout masks, zoneout and autocast as there)
            _, h, c = run_stack(input.unsqueeze(0), h0.unsqueeze(0), c0.unsqueeze(0),
                                self.layer_weights(), 1, 1, None, self.options, 0.0,
                                self.training, self.generator(input.device))
            h, c = h[0], c[0]
        if not batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c
