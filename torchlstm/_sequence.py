"""What LSTM and RNN share: running stacked layers through the fused op, PackedSequence
padding, and the Keras output contract. No time loop here: each (layer, direction) is one
call of torch.ops.torchlstm.layer_forward, which loops over time in C++/CUDA.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ._ops import ops


class LayerWeights(NamedTuple):
    w_ih: Tensor
    w_hh: Tensor
    b_ih: Optional[Tensor]
    b_hh: Optional[Tensor]
    w_hr: Optional[Tensor]


def run_stack(x: Tensor, h0: Tensor, c0: Tensor, weights: Sequence[LayerWeights],
              num_layers: int, num_directions: int, mask: Optional[Tensor], activation: int,
              recurrent_activation: int, dropout: float = 0.0, training: bool = False):
    """x (T,B,I) time-major; h0 (L*D,B,Hout), c0 (L*D,B,H); weights[k] for k = layer*D + d.
    Returns (output (T,B,D*Hout), h_n (L*D,B,Hout), c_n (L*D,B,H)), as nn.LSTM."""
    if x.shape[0] == 0:  # nn.LSTM's error, word for word
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    # Without autograd the inference op runs: it saves nothing for backward.
    infer = not torch.is_grad_enabled() or not (
        x.requires_grad or h0.requires_grad or c0.requires_grad
        or any(t is not None and t.requires_grad for w in weights for t in w))
    layer_op = ops.layer_inference if infer else ops.layer_forward
    h_n, c_n = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(num_directions):
            k = layer * num_directions + d
            w = weights[k]
            out, h, c = layer_op(x, h0[k], c0[k], w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, mask,
                                 d == 1, activation, recurrent_activation)[:3]
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        x = outs[0] if num_directions == 1 else torch.cat(outs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    if len(h_n) == 1:  # a view, not a copy
        return x, h_n[0].unsqueeze(0), c_n[0].unsqueeze(0)
    return x, torch.stack(h_n), torch.stack(c_n)


def unpack(seq: PackedSequence):
    """PackedSequence -> (padded (T,B,I) in sorted batch order, mask (T,B) of valid steps).

    In packed data, step t holds the first batch_sizes[t] (sorted) sequences, so the
    valid cells of the (T,B) grid, read row by row, are exactly the packed rows."""
    data, batch_sizes = seq.data, seq.batch_sizes
    T, B = batch_sizes.numel(), int(batch_sizes[0])
    mask = (torch.arange(B)[None, :] < batch_sizes[:, None]).to(data.device)
    padded = data.new_zeros(T, B, data.shape[-1])
    padded[mask] = data
    return padded, mask


def pack_like(out: Tensor, mask: Tensor, seq: PackedSequence) -> PackedSequence:
    """Inverse of unpack for an output (T,B,F) computed on the padded grid."""
    return PackedSequence(out[mask], seq.batch_sizes, seq.sorted_indices, seq.unsorted_indices)


def keras_result(output, h_n: Tensor, c_n: Tensor, num_directions: int,
                 return_sequences: bool, return_state: bool, batch_dim: Optional[int]):
    """The Keras contract.

    output: the whole sequence (return_sequences) or the last step, (B, D*Hout): the final
    h of each direction of the last layer, concatenated (what Keras' Bidirectional gives).
    states: for one layer and one direction h (B,Hout) and c (B,H) as Keras; otherwise
    nn.LSTM's stacked (L*D, B, ·) tensors. batch_dim: None for batched input, else the
    batch axis to squeeze away (unbatched input).
    """
    if not return_sequences:
        output = torch.cat(list(h_n[-num_directions:]), dim=-1)
        if batch_dim is not None:
            output = output.squeeze(0)
    if not return_state:
        return output
    if h_n.shape[0] == 1:
        h, c = h_n[0], c_n[0]
        if batch_dim is not None:
            h, c = h.squeeze(0), c.squeeze(0)
    else:
        h, c = h_n, c_n
        if batch_dim is not None:
            h, c = h.squeeze(1), c.squeeze(1)
    return output, h, c
