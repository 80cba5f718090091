"""What LSTM and RNN share: running stacked layers through the fused op, PackedSequence
padding, and the Keras output contract. No time loop here: each (layer, direction) is one
call of torch.ops.torchlstm.layer_forward, which loops over time in C++/CUDA.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import _unfused, activations
from ._ops import ops


class LayerWeights(NamedTuple):
    w_ih: Tensor
    w_hh: Tensor
    b_ih: Optional[Tensor]
    b_hh: Optional[Tensor]
    w_hr: Optional[Tensor]


class Regularizers(NamedTuple):
    """Keras dropout and zoneout rates of a module (all in [0, 1))."""
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0

    def active(self, training: bool) -> bool:
        """Whether a forward call in this mode passes anything to the op."""
        return (self.zoneout_h > 0 or self.zoneout_c > 0
                or (training and (self.input_dropout > 0 or self.recurrent_dropout > 0)))

    def draws(self, training: bool) -> bool:
        """Whether a forward call in this mode draws random numbers (training only)."""
        return training and any(r > 0 for r in self)


def _rate(name: str, value) -> float:
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not 0 <= value < 1):
        raise ValueError(f"{name} should be a number in range [0, 1) representing the "
                         f"probability of an element being {'kept' if 'zoneout' in name else 'zeroed'}"
                         f", got {value!r}")
    return float(value)


def configure_regularizers(module, input_dropout, recurrent_dropout, zoneout, seed) -> None:
    """Check the Keras dropout / zoneout options and set them on ``module``: the
    attributes as given (input_dropout, recurrent_dropout, zoneout, seed), the rates
    (_regularizers) and the module's own generator, made on first use (see generator)."""
    if isinstance(zoneout, (tuple, list)):
        if len(zoneout) != 2:
            raise ValueError("zoneout should be a rate or a pair (h_rate, c_rate), got "
                             f"{len(zoneout)} values")
        zh, zc = _rate("zoneout[0] (the h rate)", zoneout[0]), _rate(
            "zoneout[1] (the c rate)", zoneout[1])
        zoneout = (zh, zc)
    else:
        zh = zc = zoneout = _rate("zoneout", zoneout)
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise TypeError(f"seed should be None or an int, got: {type(seed).__name__}")
    module.input_dropout = _rate("input_dropout", input_dropout)
    module.recurrent_dropout = _rate("recurrent_dropout", recurrent_dropout)
    module.zoneout = zoneout
    module.seed = None if seed is None else int(seed)
    module._regularizers = Regularizers(module.input_dropout, module.recurrent_dropout, zh, zc)
    module._generator = None


def generator(module, device: torch.device) -> Optional[torch.Generator]:
    """The module's torch.Generator on ``device``, seeded with ``module.seed`` when it is
    first needed there (None without a seed: the global RNG; None too when the module
    draws nothing in its current mode, e.g. eval). It is made again, from the seed, when
    the inputs move to another device. (Dynamo cannot trace a torch.Generator: with a
    seed, torch.compile(fullgraph=True) works in eval mode only.)"""
    if module.seed is None or not module._regularizers.draws(module.training):
        return None
    g = module._generator
    if g is None or g.device != device:
        g = torch.Generator(device=device)
        g.manual_seed(module.seed)
        module._generator = g
    return g


def regularizers_repr(module) -> str:
    s = ""
    for name in ("input_dropout", "recurrent_dropout", "zoneout"):
        if getattr(module, name) != 0:
            s += f", {name}={getattr(module, name)}"
    if module.seed is not None:
        s += f", seed={module.seed}"
    return s


def draw_regularizers(reg: Regularizers, training: bool, T: int, B: int, I: int, Hout: int,
                      H: int, like: Tensor, gen: Optional[torch.Generator]):
    """The op's (input_keep, recurrent_keep, zoneout_h, zoneout_c) for one layer and one
    direction, None where a rate is 0. Training: the dropout masks (B,I) and (B,Hout),
    0 or 1/(1-p), drawn once for the whole sequence; zoneout z (T,B,·), 1 (keep the old
    value) with probability rate, drawn per step. Drawn in that order. Eval: no dropout,
    and z = rate everywhere (an expanded view, nothing drawn)."""
    def keep(shape, p):
        return like.new_empty(shape).bernoulli_(1 - p, generator=gen).div_(1 - p)

    def zone(shape, rate):
        if training:
            return like.new_empty(shape).bernoulli_(rate, generator=gen)
        return like.new_full((1, 1, 1), rate).expand(shape)
    ik = rk = zh = zc = None
    if training and reg.input_dropout > 0:
        ik = keep((B, I), reg.input_dropout)
    if training and reg.recurrent_dropout > 0:
        rk = keep((B, Hout), reg.recurrent_dropout)
    if reg.zoneout_h > 0:
        zh = zone((T, B, Hout), reg.zoneout_h)
    if reg.zoneout_c > 0:
        zc = zone((T, B, H), reg.zoneout_c)
    return ik, rk, zh, zc


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


def run_stack(x: Tensor, h0: Tensor, c0: Tensor, weights: Sequence[LayerWeights],
              num_layers: int, num_directions: int, mask: Optional[Tensor], activation,
              recurrent_activation, dropout: float = 0.0, training: bool = False,
              regularizers: Regularizers = Regularizers(),
              gen: Optional[torch.Generator] = None):
    """x (T,B,I) time-major; h0 (L*D,B,Hout), c0 (L*D,B,H); weights[k] for k = layer*D + d.
    activation, recurrent_activation: kernel ids, or callables (then the unfused path).
    dropout: nn.LSTM's, between layers. regularizers: Keras dropout and zoneout, drawn per
    layer and direction (draw_regularizers, with gen, or the global RNG when None).
    Returns (output (T,B,D*Hout), h_n (L*D,B,Hout), c_n (L*D,B,H)), as nn.LSTM."""
    if x.shape[0] == 0:  # nn.LSTM's error, word for word
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    ac = autocast_dtype(x)
    if ac is not None:
        x, h0, c0 = autocast_cast(ac, x, h0, c0)
        weights = [LayerWeights(*autocast_cast(ac, *w)) for w in weights]
    # Without autograd the inference op runs: it saves nothing for backward.
    infer = not torch.is_grad_enabled() or not (
        x.requires_grad or h0.requires_grad or c0.requires_grad
        or any(t is not None and t.requires_grad for w in weights for t in w))
    layer_op = ops.layer_inference if infer else ops.layer_forward
    if callable(activation) or callable(recurrent_activation):  # a user's own function
        act, ract = activations.as_function(activation), activations.as_function(
            recurrent_activation)

        def layer_op(*args):
            return _unfused.layer_forward(*args[:10], act, ract, *args[12:])
    draw = regularizers.active(training)
    T, B = x.shape[0], x.shape[1]
    h_n, c_n = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(num_directions):
            k = layer * num_directions + d
            w = weights[k]
            reg = ()
            if draw:
                reg = draw_regularizers(regularizers, training, T, B, x.shape[2],
                                        w.w_hh.shape[1], w.w_hh.shape[0] // 4, x, gen)
            out, h, c = layer_op(x, h0[k], c0[k], w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, mask,
                                 d == 1, activation, recurrent_activation, *reg)[:3]
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
                 return_sequences: bool, return_state: bool, batch_dim: Optional[int],
                 last: Optional[Tensor] = None):
    """The Keras contract.

    output: the whole sequence (return_sequences) or the last step, (B, D*Hout): the final
    h of each direction of the last layer, concatenated (what Keras' Bidirectional gives).
    states: for one layer and one direction h (B,Hout) and c (B,H) as Keras; otherwise
    nn.LSTM's stacked (L*D, B, ·) tensors. batch_dim: None for batched input, else the
    batch axis to squeeze away (unbatched input). last: the last output when it is not the
    final state (with a Keras mask: see last_output).
    """
    if not return_sequences:
        output = last if last is not None else torch.cat(list(h_n[-num_directions:]), dim=-1)
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


def check_mask(mask, x: Tensor, batch_first: bool, batched: bool) -> Tensor:
    """A Keras mask (True = a valid step) as a (T, B) bool tensor on x's device; x is the
    time-major (T, B, I) input. The mask's layout follows the input's: (B, T) with
    batch_first, (T, B) without, (T,) for unbatched input."""
    T, B = x.shape[0], x.shape[1]
    expected = ((B, T) if batch_first else (T, B)) if batched else (T,)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool tensor of shape {expected}, got "
                        f"{type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = valid step), got {mask.dtype}")
    if tuple(mask.shape) != expected:
        layout = ("(batch, seq_len)" if batch_first else "(seq_len, batch)") if batched \
            else "(seq_len,)"
        raise ValueError(f"mask must have shape {layout} = {expected}, got {tuple(mask.shape)}")
    mask = mask.to(x.device)
    if not batched:
        return mask.unsqueeze(1)
    return (mask.t() if batch_first else mask).contiguous()


def keras_masked_output(out: Tensor, mask: Tensor, num_directions: int,
                        zero_output_for_mask: bool) -> Tensor:
    """Keras' output at masked steps. The kernel leaves the carried h there; Keras gives
    the previous output (zeros before a sequence's first valid step), or zeros with
    zero_output_for_mask. Each direction in its own processing order."""
    T, B, F = out.shape
    m = mask.to(out.dtype)
    if zero_output_for_mask:
        keep = [m] * num_directions
    else:
        seen = torch.cummax(m, dim=0).values  # a valid step has been seen
        keep = [seen]
        if num_directions == 2:
            keep.append(torch.cummax(m.flip(0), dim=0).values.flip(0))
    factor = torch.stack(keep, dim=2).unsqueeze(3)  # (T, B, D, 1)
    return (out.view(T, B, num_directions, F // num_directions) * factor).view(T, B, F)


def last_output(out: Tensor, num_directions: int) -> Tensor:
    """Each direction's output at its last processed step, (B, D*Hout), from a time-major
    output: step T-1 forward, step 0 backward (Keras' Bidirectional does the same)."""
    if num_directions == 1:
        return out[-1]
    half = out.shape[-1] // 2
    return torch.cat([out[-1, :, :half], out[0, :, half:]], dim=-1)


def check_flags(**flags) -> None:
    """Boolean constructor options, with nn.LSTM's message for a non-bool."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")


def keras_repr(module) -> str:
    """The Keras options a module has away from their defaults, for extra_repr."""
    s = ""
    for name in ("go_backwards", "zero_output_for_mask", "stateful"):
        if getattr(module, name):
            s += f", {name}=True"
    return s
