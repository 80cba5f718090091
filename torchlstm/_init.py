"""Initialisation shared by LSTM and LSTMCell: nn.LSTM's (the default, so one seed gives
nn.LSTM's exact weights) or Keras' (init="keras"), and Keras' unit_forget_bias."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import init

def apply(module: nn.Module, groups, hidden_size: int, init_name: str,
          unit_forget_bias: bool) -> None:
    """groups: (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, weight_ch) per layer and
    direction (LayerWeights).

    torch: U(-1/sqrt(H), 1/sqrt(H)) for every parameter in registration order (nn.LSTM).
    keras: glorot_uniform weight_ih (and weight_hr), orthogonal weight_hh, zero biases;
    the peephole weights (weight_ch, which Keras 3 has not) U(-1/sqrt(H), 1/sqrt(H)) too.
    unit_forget_bias: the forget-gate bias totals 1 (bias_ih's slice 1, bias_hh's 0).
    Layer-norm parameters (ln_*): scales ones, the shift zeros, with either init; they
    draw nothing from the RNG (so the other weights are nn.LSTM's for a seed)."""
    with torch.no_grad():
        ln = {id(t) for w in groups for t in (w.ln_ih, w.ln_hh, w.ln_c, w.ln_bc)
              if t is not None}
        if init_name == "torch":
            stdv = 1.0 / math.sqrt(hidden_size)
            for weight in module.parameters():
                if id(weight) not in ln:
                    init.uniform_(weight, -stdv, stdv)
        else:
            for w_ih, w_hh, b_ih, b_hh, w_hr, w_ch, *_ in groups:
                if w_ch is not None:
                    init.uniform_(w_ch, -1.0 / math.sqrt(hidden_size), 1.0 / math.sqrt(hidden_size))
                init.xavier_uniform_(w_ih)  # Keras' glorot_uniform on kernel = w_ih.T
                init.orthogonal_(w_hh)
                if w_hr is not None:
                    init.xavier_uniform_(w_hr)
                for b in (b_ih, b_hh):
                    if b is not None:
                        b.zero_()
        for w in groups:
            for scale in (w.ln_ih, w.ln_hh, w.ln_c):
                if scale is not None:
                    scale.fill_(1.0)
            if w.ln_bc is not None:
                w.ln_bc.zero_()
        if unit_forget_bias:
            for _, _, b_ih, b_hh, *_ in groups:
                if b_ih is not None:
                    b_ih[hidden_size:2 * hidden_size] = 1.0
                    b_hh[hidden_size:2 * hidden_size] = 0.0
