"""Keras dropout and zoneout: the masks one call of one layer and direction gets."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._ops import NO_REGULARIZERS, LayerRegularizers
from ._options import CellOptions


def draw(options: CellOptions, training: bool, T: int, B: int, I: int, Hout: int, H: int,
         like: Tensor, gen: Optional[torch.Generator]) -> LayerRegularizers:
    """The op's regularisers for one layer and one direction, None where a rate is 0.
    Training: the dropout masks (B,I) and (B,Hout), 0 or 1/(1-p), drawn once for the whole
    sequence; zoneout z (T,B,·), 1 (keep the old value) with probability rate, drawn per
    step. Drawn in that order. Eval: no dropout, and z = rate everywhere (an expanded view,
    nothing drawn)."""
    if not options.regularized(training):
        return NO_REGULARIZERS

    def keep(shape, p):
        return like.new_empty(shape).bernoulli_(1 - p, generator=gen).div_(1 - p)

    def zone(shape, rate):
        if training:
            return like.new_empty(shape).bernoulli_(rate, generator=gen)
        return like.new_full((1, 1, 1), rate).expand(shape)
    ik = rk = zh = zc = None
    if training and options.input_dropout > 0:
        ik = keep((B, I), options.input_dropout)
    if training and options.recurrent_dropout > 0:
        rk = keep((B, Hout), options.recurrent_dropout)
    if options.zoneout_h > 0:
        zh = zone((T, B, Hout), options.zoneout_h)
    if options.zoneout_c > 0:
        zc = zone((T, B, H), options.zoneout_c)
    return LayerRegularizers(ik, rk, zh, zc)
