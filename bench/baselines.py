"""What torchlstm is measured against, besides torch.nn.LSTM itself: the per-step loop
people write when they need an activation nn.LSTM lacks, eager and under torch.compile.
Both take their weights from a torchlstm.LSTM (one layer, one direction)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from torchlstm import activations


def make_cell_step(lstm):
    """One LSTM step as people write it: two linears, chunk, activations, cell update."""
    act = activations.reference(activations.name_of(lstm._activation_id))
    ract = activations.reference(activations.name_of(lstm._recurrent_activation_id))

    def step(x_t, h, c, w_ih, w_hh, b_ih, b_hh, w_hr):
        gates = F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        c = ract(f) * c + ract(i) * act(g)
        h = ract(o) * act(c)
        if w_hr is not None:
            h = F.linear(h, w_hr)
        return h, c
    return step


class LoopLSTM(torch.nn.Module):
    """A Python loop over time around a cell step (optionally torch.compile'd)."""

    def __init__(self, lstm, compile_step=False):
        super().__init__()
        self.lstm = lstm
        step = make_cell_step(lstm)
        self.step = torch.compile(step, dynamic=False) if compile_step else step

    def forward(self, x):
        m = self.lstm
        w = (m.weight_ih_l0, m.weight_hh_l0, getattr(m, "bias_ih_l0", None),
             getattr(m, "bias_hh_l0", None), getattr(m, "weight_hr_l0", None))
        B = x.shape[1]
        h = x.new_zeros(B, m.proj_size or m.hidden_size)
        c = x.new_zeros(B, m.hidden_size)
        outs = []
        for t in range(x.shape[0]):
            h, c = self.step(x[t], h, c, *w)
            outs.append(h)
        return torch.stack(outs), (h.unsqueeze(0), c.unsqueeze(0))
