"""The layer stack LSTM and RNN(cell) run: layers × directions, each ONE op call
(torch.ops.torchlstm.layer_forward loops over time in C++/CUDA; a bidirectional layer's
two directions one layer_pair_forward, which the CPU runs at once), nn.LSTM's dropout
between layers, the Keras regularisers drawn per layer and direction, and autocast."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _regularizers
from ._ops import LayerWeights, run_layer, run_layer_pair
from ._options import CellOptions


def autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """Under torch.autocast on CUDA, the dtype the LSTM runs in — inputs, states and
    weights cast to it, as cuDNN's nn.LSTM is — else None. CPU autocast leaves torchlstm
    in the parameters' dtype (its CPU kernels compute in float32/float64 whatever the
    dtype, so casting down there would only lose precision)."""
    if x.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return None


def autocast_cast(dtype: Optional[torch.dtype], *tensors):
    """tensors cast to dtype (None: unchanged; None entries stay None)."""
    if dtype is None:
        return tensors
    return tuple(t if t is None else t.to(dtype) for t in tensors)


def pair_op_allowed() -> bool:
    """Whether a bidirectional layer runs as ONE pair op (both directions at once; see
    csrc/ops.h) rather than two layer ops. Not while torch.export (and so the ONNX
    exporter) or torch.jit.trace records the graph: the graph they keep has the
    per-direction ops, which every exporter and runtime takes; the maths are the same."""
    return not (torch.jit.is_tracing() or torch.compiler.is_exporting())


def run_stack(x: Tensor, h0: Tensor, c0: Tensor, weights: Sequence[LayerWeights],
              num_layers: int, num_directions: int, mask: Optional[Tensor],
              options: CellOptions, dropout: float = 0.0, training: bool = False,
              gen: Optional[torch.Generator] = None):
    """x (T,B,I) time-major; h0 (L*D,B,Hout), c0 (L*D,B,H); weights[k] for k = layer*D + d.
    dropout: nn.LSTM's, between layers. The options' Keras dropout and zoneout are drawn
    per layer and direction (with gen, or the global RNG when None).
    Returns (output (T,B,D*Hout), h_n (L*D,B,Hout), c_n (L*D,B,H)), as nn.LSTM."""
    if x.shape[0] == 0:  # nn.LSTM's error, word for word
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    ac = autocast_dtype(x)
    if ac is not None:
        x, h0, c0 = autocast_cast(ac, x, h0, c0)
        weights = [LayerWeights(*autocast_cast(ac, *w)) for w in weights]
    # Without autograd the inference op runs: it saves nothing for backward. While
    # torch.jit.trace traces, the grad mode is not looked at: the tracer's check re-runs
    # under no_grad and needs the same op (a traced module then trains as well).
    need_grad = (torch.is_grad_enabled() or torch.jit.is_tracing()) and (
        x.requires_grad or h0.requires_grad or c0.requires_grad
        or any(t is not None and t.requires_grad for w in weights for t in w))
    T, B = x.shape[0], x.shape[1]
    both_at_once = num_directions == 2 and pair_op_allowed()
    acts = dict(activation=options.activation_id,
                recurrent_activation=options.recurrent_activation_id, need_grad=need_grad,
                layer_norm_eps=options.layer_norm_eps)
    h_n, c_n = [], []
    for layer in range(num_layers):
        ks = [layer * num_directions + d for d in range(num_directions)]
        regs = [_regularizers.draw(options, training, T, B, x.shape[2],
                                   weights[k].w_hh.shape[1], weights[k].w_hh.shape[0] // 4,
                                   x, gen) for k in ks]
        if both_at_once:
            x, h, c = run_layer_pair(x, h0[ks[0]:ks[1] + 1], c0[ks[0]:ks[1] + 1],
                                     tuple(weights[k] for k in ks), mask=mask, reg=tuple(regs),
                                     **acts)
            h_n.extend(h.unbind(0))
            c_n.extend(c.unbind(0))
        else:
            outs = []
            for d, k in enumerate(ks):
                out, h, c = run_layer(x, h0[k], c0[k], weights[k], mask=mask, reverse=d == 1,
                                      reg=regs[d], **acts)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if num_directions == 1 else torch.cat(outs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    if len(h_n) == 1:  # a view, not a copy
        return x, h_n[0].unsqueeze(0), c_n[0].unsqueeze(0)
    return x, torch.stack(h_n), torch.stack(c_n)
