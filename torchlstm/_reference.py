"""The LSTM as a plain PyTorch loop over time: ONE definition of the maths, used by the
modules' unfused path (activations given as arbitrary callables), by the tests as the
float64 reference, and by the benchmark as the loop people write by hand.

Semantics (those of torch.ops.torchlstm.layer_forward): a = x_t W_ih^T + b_ih +
(h_{t-1} * recurrent_keep) W_hh^T + b_hh, gates i, f, g, o in torch's order,
c~ = ract(f) c_{t-1} + ract(i) act(g), h~ = ract(o) act(c~) (then W_hr); zoneout z:
c = z c_{t-1} + (1-z) c~, h = z h_{t-1} + (1-z) h~; input dropout scales x_t by
input_keep; at a masked step (mask[t, b] false) the state carries over and the output
holds the carried h. Peephole connections (w_ch = [p_i, p_f, p_o], 3H): a_i += p_i c_{t-1},
a_f += p_f c_{t-1}, a_o += p_o c_t, c_t being the carried state (c~, or zoneout's blend).
Layer normalisation (ln_ih, ln_hh (4H), ln_c, ln_bc (H); Ba et al. 2016, haste's
LayerNormLSTM): a = LN(x_t W_ih^T; ln_ih) + LN(h_{t-1} W_hh^T; ln_hh) + b_ih + b_hh, each LN
over the whole 4H row with a scale and no shift (the peephole terms added after it);
c~ as above (un-normalised); h~ = ract(o) act(LN(c~; ln_c, ln_bc)) over H. LN(v) =
(v - mean(v)) / sqrt(var(v) + eps) (biased variance), eps = layer_norm_eps. Zoneout blends
the carried c and h as without it, masks carry them over: LN(c) only makes h~ from c~.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def cell_step(x_t: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor],
              act: Callable, ract: Callable, w_ch: Optional[Tensor] = None,
              z_c: Optional[Tensor] = None, ln_ih: Optional[Tensor] = None,
              ln_hh: Optional[Tensor] = None, ln_c: Optional[Tensor] = None,
              ln_bc: Optional[Tensor] = None, layer_norm_eps: float = 1e-5):
    """One step: (h~, c) from (x_t, h_{t-1}, c_{t-1}): two linears, chunk, activations.
    c is c~, or with z_c (zoneout's z of c) the carried z_c c_{t-1} + (1 - z_c) c~.
    w_ch (3H): peephole weights p_i, p_f, p_o; ln_*: layer normalisation (see the module
    docstring)."""
    if ln_ih is None:
        a = F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    else:
        n4 = (w_hh.shape[0],)
        a = (F.layer_norm(F.linear(x_t, w_ih), n4, ln_ih, None, layer_norm_eps)
             + F.layer_norm(F.linear(h, w_hh), n4, ln_hh, None, layer_norm_eps))
        for b in (b_ih, b_hh):
            if b is not None:
                a = a + b
    i, f, g, o = a.chunk(4, dim=1)
    if w_ch is not None:
        p_i, p_f, p_o = w_ch.chunk(3)
        i, f = i + p_i * c, f + p_f * c
    c_new = ract(f) * c + ract(i) * act(g)
    c_out = c_new if z_c is None else z_c * c + (1 - z_c) * c_new  # z = 1 keeps the old value
    if w_ch is not None:
        o = o + p_o * c_out
    c_h = c_new if ln_c is None else F.layer_norm(c_new, ln_c.shape, ln_c, ln_bc,
                                                  layer_norm_eps)
    h = ract(o) * act(c_h)
    if w_hr is not None:
        h = F.linear(h, w_hr)
    return h, c_out


def layer_forward(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
                  w_hr: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                  reverse: bool = False, act: Callable = torch.tanh,
                  ract: Callable = torch.sigmoid, input_keep: Optional[Tensor] = None,
                  recurrent_keep: Optional[Tensor] = None, zoneout_h: Optional[Tensor] = None,
                  zoneout_c: Optional[Tensor] = None, step: Callable = cell_step,
                  w_ch: Optional[Tensor] = None, ln_ih: Optional[Tensor] = None,
                  ln_hh: Optional[Tensor] = None, ln_c: Optional[Tensor] = None,
                  ln_bc: Optional[Tensor] = None, layer_norm_eps: float = 1e-5):
    """x (T,B,I) time-major -> (output (T,B,Hout), h_n, c_n); see the module docstring.
    ``step`` replaces cell_step (the benchmark passes a torch.compile'd one); it gets
    w_ch, z_c and the layer-norm arguments as keywords only where they are given."""
    ln = {}
    if ln_ih is not None:
        ln = dict(ln_ih=ln_ih, ln_hh=ln_hh, ln_c=ln_c, ln_bc=ln_bc,
                  layer_norm_eps=layer_norm_eps)
    T = x.shape[0]
    if input_keep is not None:
        x = x * input_keep
    h, c = h0, c0
    outs: list[Optional[Tensor]] = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_in = h if recurrent_keep is None else h * recurrent_keep
        extra = dict(ln)
        if w_ch is not None:
            extra["w_ch"] = w_ch
        if zoneout_c is not None:
            extra["z_c"] = zoneout_c[t]
        h_new, c_new = step(x[t], h_in, c, w_ih, w_hh, b_ih, b_hh, w_hr, act, ract, **extra)
        if zoneout_h is not None:
            h_new = zoneout_h[t] * h + (1 - zoneout_h[t]) * h_new
        if mask is not None:
            m = mask[t].unsqueeze(1)
            h_new, c_new = torch.where(m, h_new, h), torch.where(m, c_new, c)
        h, c = h_new, c_new
        outs[t] = h
    return torch.stack(outs), h, c
