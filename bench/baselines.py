"""What torchlstm is measured against, besides torch.nn.LSTM itself: the per-step loop
people write when they need an activation nn.LSTM lacks, eager and under torch.compile.
Both take their weights from a torchlstm.LSTM (one layer, one direction); the step is
torchlstm's one reference step (two linears, chunk, activations, cell update)."""
from __future__ import annotations

import functools

import torch

from torchlstm import _reference, activations


def make_cell_step(lstm):
    """One LSTM step as people write it, with the module's activations."""
    return functools.partial(_reference.cell_step,
                             act=activations.as_function(lstm.options.activation_id),
                             ract=activations.as_function(lstm.options.recurrent_activation_id))


class LoopLSTM(torch.nn.Module):
    """A Python loop over time around a cell step (optionally torch.compile'd)."""

    def __init__(self, lstm, compile_step=False):
        super().__init__()
        self.lstm = lstm
        step = make_cell_step(lstm)
        self.step = torch.compile(step, dynamic=False) if compile_step else step

    def forward(self, x):
        m = self.lstm
        if m.num_layers != 1 or m.bidirectional or not isinstance(x, torch.Tensor):
            raise NotImplementedError("the loop baseline is one layer, one direction, padded")
        w = (m.weight_ih_l0, m.weight_hh_l0, getattr(m, "bias_ih_l0", None),
             getattr(m, "bias_hh_l0", None), getattr(m, "weight_hr_l0", None))
        # the cell variants, as the same step takes them
        extra = {"w_ch": m.weight_ch_l0} if m.options.peephole else {}
        if m.options.layer_norm:
            extra.update(ln_ih=m.ln_weight_ih_l0, ln_hh=m.ln_weight_hh_l0, ln_c=m.ln_weight_c_l0,
                         ln_bc=m.ln_bias_c_l0, layer_norm_eps=m.options.layer_norm_eps)
        B = x.shape[1]
        h = x.new_zeros(B, m.proj_size or m.hidden_size)
        c = x.new_zeros(B, m.hidden_size)
        outs = []
        for t in range(x.shape[0]):
            h, c = self.step(x[t], h, c, *w, **extra)
            outs.append(h)
        return torch.stack(outs), (h.unsqueeze(0), c.unsqueeze(0))
