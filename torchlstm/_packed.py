"""PackedSequence in and out: padded once to the (T, B) grid and run with a mask of its
valid steps (the kernels carry the state over at padded steps), packed again after."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence


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
