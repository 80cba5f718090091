"""The op bindings: the ONE Python file that knows the torchlstm ops' argument orders
(csrc/ops.h defines the schemas). It registers each op's fake kernel (shapes only, so
torch.compile / FakeTensor can trace it) and the autograd formulas of layer_forward and
layer_pair_forward (both directions of a layer in one call, which the CPU runs at once),
and gives the rest of the package two named entry points, ``run_layer`` and
``run_layer_pair``.

The regularisers (input_keep, recurrent_keep, zoneout_h, zoneout_c) are op inputs that
are never differentiated (their gradient is None); backward gets them back to recompute
what the forward did. The cell variants follow them: w_ch (3H), the peephole weights,
then the layer normalisation's ln_w_ih, ln_w_hh (4H), ln_w_c, ln_b_c (H) and
layer_norm_eps.
"""
from __future__ import annotations

import types
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loading the library registers torch.ops.torchlstm.*)
from . import _reference, activations

ops = torch.ops.torchlstm


class LayerWeights(NamedTuple):
    """The parameters of one layer and direction (None where absent)."""
    w_ih: Tensor
    w_hh: Tensor
    b_ih: Optional[Tensor]
    b_hh: Optional[Tensor]
    w_hr: Optional[Tensor]
    w_ch: Optional[Tensor] = None  # peephole weights (3H: i, f, o)
    # layer_norm=True: the scales of LN(W_ih x) (4H) and LN(W_hh h) (4H), the scale and
    # shift of LN(c) (H); all four or none
    ln_ih: Optional[Tensor] = None
    ln_hh: Optional[Tensor] = None
    ln_c: Optional[Tensor] = None
    ln_bc: Optional[Tensor] = None


class LayerRegularizers(NamedTuple):
    """One call's Keras dropout masks and zoneout z (None where off; see csrc/layer_call.h)."""
    input_keep: Optional[Tensor] = None
    recurrent_keep: Optional[Tensor] = None
    zoneout_h: Optional[Tensor] = None
    zoneout_c: Optional[Tensor] = None


NO_REGULARIZERS = LayerRegularizers()


def cell_state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels keep cell states in (and save them for backward in): float32
    for float16/bfloat16 inputs, else the input's own."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def run_layer(x: Tensor, h0: Tensor, c0: Tensor, w: LayerWeights, *, mask: Optional[Tensor],
              reverse: bool, activation, recurrent_activation,
              reg: LayerRegularizers = NO_REGULARIZERS, need_grad: bool = True,
              layer_norm_eps: float = 1e-5):
    """One layer and direction over a time-major sequence x (T,B,I):
    (output (T,B,Hout), h_n (B,Hout), c_n (B,H)). activation, recurrent_activation: kernel
    ids, or callables; callables and dtypes the kernels lack (complex) take the reference
    loop, with autograd. need_grad=False runs the inference op, which saves nothing.
    Layer normalisation (w.ln_ih given) is fused in the CPU and CUDA kernels; on other
    devices it takes the reference loop."""
    ln = {}
    if w.ln_ih is not None:
        _check_layer_norm(x, w)
        ln = dict(ln_ih=w.ln_ih, ln_hh=w.ln_hh, ln_c=w.ln_c, ln_bc=w.ln_bc,
                  layer_norm_eps=layer_norm_eps)
    if (callable(activation) or callable(recurrent_activation) or x.dtype not in _KERNEL_DTYPES
            or (ln and x.device.type not in ("cpu", "cuda"))):
        return _reference.layer_forward(
            x, h0, c0, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, mask=mask, reverse=reverse,
            act=activations.as_function(activation),
            ract=activations.as_function(recurrent_activation), **reg._asdict(), w_ch=w.w_ch,
            **ln)
    op = ops.layer_forward if need_grad else ops.layer_inference
    return op(x, h0, c0, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, mask, reverse, activation,
              recurrent_activation, *reg, w.w_ch, w.ln_ih, w.ln_hh, w.ln_c, w.ln_bc,
              layer_norm_eps)[:3]


def run_layer_pair(x: Tensor, h0: Tensor, c0: Tensor, w: tuple, *, mask: Optional[Tensor],
                   activation, recurrent_activation, reg: tuple = (NO_REGULARIZERS,) * 2,
                   need_grad: bool = True, layer_norm_eps: float = 1e-5):
    """Both directions of a bidirectional layer in one op call (layer_pair_forward /
    layer_pair_inference), which the CPU runs at once, one thread each: h0, c0 (2,B,Hout)
    / (2,B,H) or pairs, w and reg pairs [forward, reverse]. Returns (output (T,B,2*Hout),
    h_n (2,B,Hout), c_n (2,B,H)), what run_layer gives per direction, side by side. What
    the kernels lack (callables, complex, layer norm off CPU/CUDA) runs as two run_layer."""
    if (callable(activation) or callable(recurrent_activation) or x.dtype not in _KERNEL_DTYPES
            or (w[0].ln_ih is not None and x.device.type not in ("cpu", "cuda"))):
        outs = [run_layer(x, h0[d], c0[d], w[d], mask=mask, reverse=d == 1,
                          activation=activation, recurrent_activation=recurrent_activation,
                          reg=reg[d], need_grad=need_grad, layer_norm_eps=layer_norm_eps)
                for d in (0, 1)]
        return (torch.cat([o[0] for o in outs], 2), torch.stack([o[1] for o in outs]),
                torch.stack([o[2] for o in outs]))
    for wd in w:
        if wd.ln_ih is not None:
            _check_layer_norm(x, wd)
    ln_on = w[0].ln_ih is not None
    if ln_on != (w[1].ln_ih is not None):
        raise ValueError("torchlstm layer norm: both directions of a layer must have it, or neither")
    pair = lambda name: [getattr(wd, name) for wd in w]  # noqa: E731
    regs = [[r[i] for r in reg] for i in range(len(LayerRegularizers._fields))]
    op = ops.layer_pair_forward if need_grad else ops.layer_pair_inference
    return op(x, [h0[0], h0[1]], [c0[0], c0[1]], pair("w_ih"), pair("w_hh"), pair("b_ih"),
              pair("b_hh"), pair("w_hr"), mask, activation, recurrent_activation, *regs,
              pair("w_ch"), pair("ln_ih"), pair("ln_hh"), pair("ln_c"), pair("ln_bc"),
              layer_norm_eps)[:3]


def _check_layer_norm(x: Tensor, w: LayerWeights) -> None:
    """The layer-norm parameters of one layer: all four, 1-D of their sizes, the dtype of
    w_ih and the device of the input (errors name the argument, as the ops' checks do)."""
    if x.is_complex():
        raise TypeError(f"torchlstm layer norm: complex inputs ({x.dtype}) are not supported "
                        "(layer_norm=True takes real dtypes)")
    H = w.w_hh.shape[0] // 4
    for name, t, size in (("ln_weight_ih", w.ln_ih, 4 * H), ("ln_weight_hh", w.ln_hh, 4 * H),
                          ("ln_weight_c", w.ln_c, H), ("ln_bias_c", w.ln_bc, H)):
        if not isinstance(t, Tensor):
            raise TypeError(f"torchlstm layer norm: {name} must be a tensor, got "
                            f"{type(t).__name__}")
        if tuple(t.shape) != (size,):
            raise ValueError(f"torchlstm layer norm: {name} must have shape [{size}] "
                             f"({'4*' if size == 4 * H else ''}hidden_size), got {list(t.shape)}")
        if t.dtype != w.w_ih.dtype:
            raise TypeError(f"torchlstm layer norm: {name} must have the dtype of w_ih "
                            f"({w.w_ih.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"torchlstm layer norm: {name} must be on the device of input "
                               f"({x.device}), got {t.device}")


# --------------------------------------------------------------------------- fake kernels
# Every real kernel returns fresh contiguous tensors, so the fakes do too (new_empty with
# a shape, never empty_like, which would copy an input's strides). A call mixing a meta
# tensor with real ones reaches the fake kernel through the dispatcher (the Meta key
# wins): it must fail as the real kernels do, naming the argument, not return
# uninitialised numbers.
def _check_devices(op: str, input: Tensor, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != input.device:
            raise RuntimeError(f"{op}: {name} must be on the device of input ({input.device}), "
                               f"got {t.device}")


def _check_required(op: str, **tensors) -> None:
    for name, t in tensors.items():
        if t is None:
            raise TypeError(f"{op}: {name} must be a tensor, got None")


def _saved_width(H: int, ln_w_ih) -> int:
    """The last dimension of layer_forward's saved `gates` (csrc/layer_call.h SavedLayout)."""
    return 9 * H + 3 if ln_w_ih is not None else 4 * H


def _forward_fake(op, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse, activation,
                  recurrent_activation, input_keep=None, recurrent_keep=None, zoneout_h=None,
                  zoneout_c=None, w_ch=None, ln_w_ih=None, ln_w_hh=None, ln_w_c=None,
                  ln_b_c=None, layer_norm_eps=1e-5):
    torch._check(input.dim() == 3, lambda: f"{op}: input must be 3-D")
    _check_required(op, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh)
    _check_devices(op, input, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                   w_hr=w_hr, mask=mask, input_keep=input_keep, recurrent_keep=recurrent_keep,
                   zoneout_h=zoneout_h, zoneout_c=zoneout_c, w_ch=w_ch, ln_w_ih=ln_w_ih,
                   ln_w_hh=ln_w_hh, ln_w_c=ln_w_c, ln_b_c=ln_b_c)
    T, B, _ = input.shape
    H = w_ih.shape[0] // 4
    Hout = w_hr.shape[0] if w_hr is not None else H
    return (input.new_empty(T, B, Hout), input.new_empty(B, Hout), input.new_empty(B, H),
            input.new_empty(T, B, _saved_width(H, ln_w_ih)),
            input.new_empty(T, B, H, dtype=cell_state_dtype(input.dtype)))


def _layer_backward_fake(grad_output, grad_hn, grad_cn, input, h0, c0, w_ih, w_hh, w_hr,
                         mask, output, gates, cs, reverse, activation, recurrent_activation,
                         input_keep=None, recurrent_keep=None, zoneout_h=None, zoneout_c=None,
                         w_ch=None, ln_w_ih=None, ln_w_hh=None, ln_w_c=None, ln_b_c=None,
                         layer_norm_eps=1e-5, b_ih=None, b_hh=None):
    op = "torchlstm.layer_backward"
    _check_required(op, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, output=output, gates=gates, cs=cs)
    _check_devices(op, input, grad_output=grad_output, grad_hn=grad_hn, grad_cn=grad_cn, h0=h0,
                   c0=c0, w_ih=w_ih, w_hh=w_hh, w_hr=w_hr, mask=mask, output=output,
                   gates=gates, cs=cs, input_keep=input_keep, recurrent_keep=recurrent_keep,
                   zoneout_h=zoneout_h, zoneout_c=zoneout_c, w_ch=w_ch, ln_w_ih=ln_w_ih,
                   ln_w_hh=ln_w_hh, ln_w_c=ln_w_c, ln_b_c=ln_b_c, b_ih=b_ih, b_hh=b_hh)
    H = w_ih.shape[0] // 4
    return (input.new_empty(input.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), w_ih.new_empty(4 * H),
            w_hr.new_empty(w_hr.shape) if w_hr is not None else w_ih.new_empty(0),
            w_ch.new_empty(w_ch.shape) if w_ch is not None else w_ih.new_empty(0),
            w_ih.new_empty(10 * H if ln_w_ih is not None else 0))


# The pair ops (both directions in one call, csrc/ops.h): every per-direction argument a
# list [forward, reverse]; their fakes are the single ops' per direction.
_PAIR_ARGS = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "mask",
              "activation", "recurrent_activation") + LayerRegularizers._fields + (
              "w_ch", "ln_w_ih", "ln_w_hh", "ln_w_c", "ln_b_c", "layer_norm_eps")
_PAIR_SHARED = ("input", "mask", "activation", "recurrent_activation", "layer_norm_eps")


def _direction(op: str, args: dict, d: int) -> dict:
    """The pair op's arguments as the single op's, for direction d (lists checked)."""
    one = {}
    for name, v in args.items():
        if name in _PAIR_SHARED:
            one[name] = v
            continue
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise TypeError(f"{op}: {name} must be a list of 2: [forward direction, reverse "
                            f"direction], got {v!r:.80}")
        if (v[0] is None) != (v[1] is None):
            raise TypeError(f"{op}: {name} must be two tensors or two None, got one of each")
        one[name] = v[d]
    return one


def _pair_forward_fake(op, *args):
    a = dict(zip(_PAIR_ARGS, args))
    outs = []
    for d in (0, 1):
        one = _direction(op, a, d)
        outs.append(_forward_fake(f"{op} ({('forward', 'reverse')[d]} direction)",
                                  *(one[n] if n != "reverse" else d == 1
                                    for n in _FORWARD_ARGS)))
    (o0, h0, c0, g0, s0), (o1, h1, c1, g1, s1) = outs
    torch._check(h0.shape == h1.shape and c0.shape == c1.shape,
                 lambda: f"{op}: both directions must have the same hidden size and output size")
    T, B, Hout = o0.shape
    x = a["input"]
    return (x.new_empty(T, B, 2 * Hout), x.new_empty(2, *h0.shape), x.new_empty(2, *c0.shape),
            [g0, g1], [s0, s1])


_PAIR_BACKWARD_ARGS = ("grad_output", "grad_hn", "grad_cn", "input", "h0", "c0", "w_ih",
                       "w_hh", "w_hr", "mask", "output", "gates", "cs", "activation",
                       "recurrent_activation") + LayerRegularizers._fields + (
                       "w_ch", "ln_w_ih", "ln_w_hh", "ln_w_c", "ln_b_c", "layer_norm_eps",
                       "b_ih", "b_hh")


def _pair_backward_fake(*args):
    op = "torchlstm.layer_pair_backward"
    a = dict(zip(_PAIR_BACKWARD_ARGS, args))
    shared = dict((n, a.pop(n)) for n in ("grad_output", "grad_hn", "grad_cn", "output"))
    grads = []
    for d in (0, 1):
        one = _direction(op, a, d)
        g = _layer_backward_fake(None, None, None, one["input"], one["h0"], one["c0"],
                                 one["w_ih"], one["w_hh"], one["w_hr"], one["mask"],
                                 shared["output"], one["gates"], one["cs"], d == 1,
                                 one["activation"], one["recurrent_activation"],
                                 *(one[n] for n in LayerRegularizers._fields), one["w_ch"],
                                 one["ln_w_ih"], one["ln_w_hh"], one["ln_w_c"], one["ln_b_c"],
                                 one["layer_norm_eps"], one["b_ih"], one["b_hh"])
        grads.append(g)
    return (grads[0][0], *([grads[0][i], grads[1][i]] for i in range(1, 9)))


# --------------------------------------------------------------------------- autograd
_FORWARD_ARGS = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "mask",
                 "reverse", "activation", "recurrent_activation") + LayerRegularizers._fields + (
                 "w_ch", "ln_w_ih", "ln_w_hh", "ln_w_c", "ln_b_c", "layer_norm_eps")
_LN_ARGS = ("ln_w_ih", "ln_w_hh", "ln_w_c", "ln_b_c")
# The differentiable ones, in order
_WEIGHT_ARGS = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_ch") + _LN_ARGS


def _layer_setup_context(ctx, inputs, output):
    a = dict(zip(_FORWARD_ARGS, inputs))  # regularisers not given: absent
    reg = LayerRegularizers(*(a.get(n) for n in LayerRegularizers._fields))
    out, _h_n, _c_n, gates, cs = output
    ctx.save_for_backward(a["input"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["w_hr"],
                          a["mask"], out, gates, cs, a["b_ih"], a["b_hh"], a.get("w_ch"),
                          *(a.get(n) for n in _LN_ARGS), *reg)
    ctx.layer_norm_eps = a.get("layer_norm_eps", 1e-5)
    ctx.num_inputs = len(inputs)
    ctx.has_bias = (a["b_ih"] is not None, a["b_hh"] is not None)
    ctx.reverse = a["reverse"]
    ctx.activations = (a["activation"], a["recurrent_activation"])
    ctx.mark_non_differentiable(gates, cs)
    # Unused outputs (h_n, c_n, and always gates and cs) get None, not zero-filled
    # tensors: the backward op treats a missing gradient as zero at no cost.
    ctx.set_materialize_grads(False)


def _differentiable_backward(ctx, saved, grads):
    """The gradients as a function of the inputs, for a backward that is itself
    differentiated (create_graph=True: gradient penalties, Hessian-vector products):
    the forward recomputed by the reference loop (torchlstm/_reference.py: the same maths,
    every option) and differentiated with autograd, keeping the graph. Correct on every
    backend and option; as slow as that loop (a Python loop over time)."""
    (input, h0, c0, w_ih, w_hh, w_hr, mask, _out, _gates, _cs, b_ih, b_hh, w_ch,
     ln_ih, ln_hh, ln_c, ln_bc, *reg) = saved
    act, ract = (activations.as_function(a) for a in ctx.activations)
    outs = _reference.layer_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask,
                                    ctx.reverse, act, ract, *reg, w_ch=w_ch, ln_ih=ln_ih,
                                    ln_hh=ln_hh, ln_c=ln_c, ln_bc=ln_bc,
                                    layer_norm_eps=ctx.layer_norm_eps)
    wrt = {n: t for n, t in zip(_WEIGHT_ARGS, (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ch,
                                               ln_ih, ln_hh, ln_c, ln_bc))
           if t is not None and t.requires_grad}
    pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
    got = torch.autograd.grad([o for o, _ in pairs], list(wrt.values()),
                              [g for _, g in pairs], create_graph=True, allow_unused=True)
    by_name = dict(zip(wrt, got))
    return tuple(by_name.get(n) for n in _FORWARD_ARGS[:ctx.num_inputs])


def _layer_backward_with(backward_op):
    def layer_backward(ctx, grad_out, grad_hn, grad_cn, _grad_gates, _grad_cs):
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            return _differentiable_backward(ctx, saved, (grad_out, grad_hn, grad_cn))
        (input, h0, c0, w_ih, w_hh, w_hr, mask, out, gates, cs, b_ih, b_hh, w_ch,
         ln_ih, ln_hh, ln_c, ln_bc, *reg) = saved
        ln = () if ln_ih is None else (ln_ih, ln_hh, ln_c, ln_bc, ctx.layer_norm_eps, b_ih, b_hh)
        d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias, d_w_hr, d_w_ch, d_ln = backward_op(
            grad_out, grad_hn, grad_cn, input, h0, c0, w_ih, w_hh, w_hr, mask, out, gates, cs,
            ctx.reverse, *ctx.activations, *reg, w_ch, *ln)
        grads = {"input": d_input, "h0": d_h0, "c0": d_c0, "w_ih": d_w_ih, "w_hh": d_w_hh,
                 "b_ih": d_bias if ctx.has_bias[0] else None,
                 "b_hh": d_bias if ctx.has_bias[1] else None,
                 "w_hr": d_w_hr if w_hr is not None else None,
                 "w_ch": d_w_ch if w_ch is not None else None}
        if ln_ih is not None:  # d_ln: ln_w_ih (4H), ln_w_hh (4H), ln_w_c (H), ln_b_c (H)
            H = w_hh.shape[0] // 4
            grads.update(zip(_LN_ARGS, d_ln.split([4 * H, 4 * H, H, H])))
        # nothing flows to mask, reverse, the activation ids or the regularisers
        return tuple(grads.get(n) for n in _FORWARD_ARGS[:ctx.num_inputs])
    return layer_backward


# The pair: each direction's tensors saved as the single op saves them, in this order.
_PAIR_SAVED = ("h0", "c0", "w_ih", "w_hh", "w_hr", "b_ih", "b_hh", "w_ch") + _LN_ARGS + \
    LayerRegularizers._fields


def _pair_setup_context(ctx, inputs, output):
    a = dict(zip(_PAIR_ARGS, inputs))
    out, _h_n, _c_n, gates, cs = output
    per_direction = [t for d in (0, 1) for t in (*(a[n][d] for n in _PAIR_SAVED), gates[d],
                                                 cs[d])]
    ctx.save_for_backward(a["input"], a["mask"], out, *per_direction)
    ctx.layer_norm_eps = a["layer_norm_eps"]
    ctx.activations = (a["activation"], a["recurrent_activation"])
    ctx.has_bias = [(a["b_ih"][d] is not None, a["b_hh"][d] is not None) for d in (0, 1)]
    # the list arguments given as two tensors; [None, None] is one input to autograd
    ctx.given = {n for n in _PAIR_ARGS if n not in _PAIR_SHARED and a[n][0] is not None}
    ctx.mark_non_differentiable(*gates, *cs)
    ctx.set_materialize_grads(False)


def _pair_backward_with(backward_op):
    def layer_pair_backward(ctx, grad_out, grad_hn, grad_cn, _grad_gates, _grad_cs):
        input, mask, out, *rest = ctx.saved_tensors
        n = len(_PAIR_SAVED) + 2
        dirs = [dict(zip(_PAIR_SAVED + ("gates", "cs"), rest[d * n:(d + 1) * n])) for d in (0, 1)]
        if torch.is_grad_enabled():  # create_graph=True: per direction, as the single op
            Hout = out.shape[2] // 2
            per = []
            for d, s in enumerate(dirs):
                one_ctx = types.SimpleNamespace(activations=ctx.activations, reverse=d == 1,
                                                layer_norm_eps=ctx.layer_norm_eps,
                                                num_inputs=len(_FORWARD_ARGS))
                saved = (input, s["h0"], s["c0"], s["w_ih"], s["w_hh"], s["w_hr"], mask,
                         out.narrow(2, d * Hout, Hout), s["gates"], s["cs"], s["b_ih"],
                         s["b_hh"], s["w_ch"], *(s[k] for k in _LN_ARGS),
                         *(s[k] for k in LayerRegularizers._fields))
                g = (None if grad_out is None else grad_out.narrow(2, d * Hout, Hout),
                     None if grad_hn is None else grad_hn[d],
                     None if grad_cn is None else grad_cn[d])
                per.append(dict(zip(_FORWARD_ARGS, _differentiable_backward(one_ctx, saved, g))))
            d_in = [p["input"] for p in per if p["input"] is not None]
            grads = {"input": sum(d_in[1:], d_in[0]) if d_in else None}
            grads.update({k: [per[0][k], per[1][k]] for k in _WEIGHT_ARGS[1:]})
        else:
            pair = lambda k: [s[k] for s in dirs]  # noqa: E731
            ln = dirs[0]["ln_w_ih"] is not None
            d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias, d_w_hr, d_w_ch, d_ln = backward_op(
                grad_out, grad_hn, grad_cn, input, pair("h0"), pair("c0"), pair("w_ih"),
                pair("w_hh"), pair("w_hr"), mask, out, pair("gates"), pair("cs"),
                *ctx.activations, *(pair(k) for k in LayerRegularizers._fields), pair("w_ch"),
                *(pair(k) for k in _LN_ARGS), ctx.layer_norm_eps,
                pair("b_ih") if ln else [None, None], pair("b_hh") if ln else [None, None])
            grads = {"input": d_input, "h0": d_h0, "c0": d_c0, "w_ih": d_w_ih, "w_hh": d_w_hh,
                     "b_ih": [d_bias[d] if ctx.has_bias[d][0] else None for d in (0, 1)],
                     "b_hh": [d_bias[d] if ctx.has_bias[d][1] else None for d in (0, 1)],
                     "w_hr": [d_w_hr[d] if dirs[d]["w_hr"] is not None else None for d in (0, 1)],
                     "w_ch": [d_w_ch[d] if dirs[d]["w_ch"] is not None else None for d in (0, 1)]}
            for k in _LN_ARGS:
                grads[k] = [None, None]
            if ln:
                H = dirs[0]["w_hh"].shape[0] // 4
                for d in (0, 1):
                    for k, part in zip(_LN_ARGS, d_ln[d].split([4 * H, 4 * H, H, H])):
                        grads[k][d] = part
        # nothing flows to mask, the activation ids or the regularisers; a list argument
        # given as two tensors gets a list of two gradients (or None), [None, None] a None
        return tuple(grads.get(k, [None, None]) if k in ctx.given
                     else grads.get(k) if k == "input" else None for k in _PAIR_ARGS)
    return layer_pair_backward


# The backward op itself has no derivative: double backward through the modules takes
# _differentiable_backward; a direct caller differentiating layer_backward gets an error,
# not autograd's fallback's silently wrong numbers.
def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "torchlstm.layer_backward (and layer_pair_backward) has no derivative: differentiate through layer_forward "
        "(torchlstm.LSTM / LSTMCell / RNN) with create_graph=True instead")


def register(namespace: str = "torchlstm") -> None:
    """Fake kernels and autograd for the layer ops of a library defined with these schemas
    (csrc/ops.h define_schemas): torchlstm's own, and the CPU emulation of the CUDA code
    (torchlstm_emu, whose tests run the same cases as a GPU's)."""
    lib_ops = getattr(torch.ops, namespace)
    for prefix, forward_fake, backward_fake, setup_context, backward_with in (
            ("layer", _forward_fake, _layer_backward_fake, _layer_setup_context,
             _layer_backward_with),
            ("layer_pair", _pair_forward_fake, _pair_backward_fake, _pair_setup_context,
             _pair_backward_with)):
        for suffix, n in (("forward", 5), ("inference", 3)):
            name = f"{namespace}::{prefix}_{suffix}"
            torch.library.register_fake(
                name, (lambda f, op, n: lambda *a: f(op, *a)[:n])(
                    forward_fake, f"{namespace}.{prefix}_{suffix}", n))
        torch.library.register_fake(f"{namespace}::{prefix}_backward", backward_fake)
        torch.library.register_autograd(
            f"{namespace}::{prefix}_forward",
            backward_with(getattr(lib_ops, f"{prefix}_backward")), setup_context=setup_context)
        torch.library.register_autograd(f"{namespace}::{prefix}_backward", _no_double_backward,
                                        setup_context=lambda ctx, inputs, output: None)

register("torchlstm")
