"""The op bindings: the ONE Python file that knows the torchlstm ops' argument orders
(csrc/ops.h defines the schemas). It registers each op's fake kernel (shapes only, so
torch.compile / FakeTensor can trace it) and the autograd formula of layer_forward, and
gives the rest of the package one named entry point, ``run_layer``.

The regularisers (input_keep, recurrent_keep, zoneout_h, zoneout_c) are op inputs that
are never differentiated (their gradient is None); backward gets them back to recompute
what the forward did. The cell variants follow them: w_ch (3H), the peephole weights,
then the layer normalisation's ln_w_ih, ln_w_hh (4H), ln_w_c, ln_b_c (H) and
layer_norm_eps.
"""
from __future__ import annotations

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


# The backward op itself has no derivative: double backward through the modules takes
# _differentiable_backward; a direct caller differentiating layer_backward gets an error,
# not autograd's fallback's silently wrong numbers.
def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "torchlstm.layer_backward has no derivative: differentiate through layer_forward "
        "(torchlstm.LSTM / LSTMCell / RNN) with create_graph=True instead")


def register(namespace: str = "torchlstm") -> None:
    """Fake kernels and autograd for the layer ops of a library defined with these schemas
    (csrc/ops.h define_schemas): torchlstm's own, and the CPU emulation of the CUDA code
    (torchlstm_emu, whose tests run the same cases as a GPU's)."""
    lib_ops = getattr(torch.ops, namespace)
    torch.library.register_fake(f"{namespace}::layer_forward",
                                lambda *a: _forward_fake(f"{namespace}.layer_forward", *a))
    torch.library.register_fake(f"{namespace}::layer_inference",
                                lambda *a: _forward_fake(f"{namespace}.layer_inference", *a)[:3])
    torch.library.register_fake(f"{namespace}::layer_backward", _layer_backward_fake)
    torch.library.register_autograd(f"{namespace}::layer_forward",
                                    _layer_backward_with(lib_ops.layer_backward),
                                    setup_context=_layer_setup_context)
    torch.library.register_autograd(f"{namespace}::layer_backward", _no_double_backward,
                                    setup_context=lambda ctx, inputs, output: None)


register("torchlstm")
