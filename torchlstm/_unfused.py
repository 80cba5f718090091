"""The path for activations given as arbitrary Python callables: the same maths as the
fused op (masks, reverse, projection), one time step at a time in PyTorch, with autograd.
Correct and slower; the modules say so with a warning when they are built."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def layer_forward(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor],
                  mask: Optional[Tensor], reverse: bool, act: Callable, ract: Callable,
                  input_keep: Optional[Tensor] = None, recurrent_keep: Optional[Tensor] = None,
                  zoneout_h: Optional[Tensor] = None, zoneout_c: Optional[Tensor] = None):
    """torchlstm.layer_forward's (output, h_n, c_n), unfused (the regularisers too)."""
    T = x.shape[0]
    if input_keep is not None:
        x = x * input_keep
    xp = F.linear(x, w_ih, b_ih)  # every step's input projection at once
    h, c = h0, c0
    outs: list[Optional[Tensor]] = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_in = h if recurrent_keep is None else h * recurrent_keep
        i, f, g, o = (xp[t] + F.linear(h_in, w_hh, b_hh)).chunk(4, dim=1)
        c_new = ract(f) * c + ract(i) * act(g)
        h_new = ract(o) * act(c_new)
        if w_hr is not None:
            h_new = F.linear(h_new, w_hr)
        if zoneout_c is not None:  # z = 1 keeps the old value
            c_new = zoneout_c[t] * c + (1 - zoneout_c[t]) * c_new
        if zoneout_h is not None:
            h_new = zoneout_h[t] * h + (1 - zoneout_h[t]) * h_new
        if mask is not None:  # a masked step carries the state over
            m = mask[t].unsqueeze(1)
            h_new, c_new = torch.where(m, h_new, h), torch.where(m, c_new, c)
        h, c = h_new, c_new
        outs[t] = h
    return torch.stack(outs), h, c
