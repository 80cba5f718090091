"""Python registrations of the torchlstm ops: fake (meta) kernels and autograd.

The C++ library (torchlstm._C) defines the schemas and the CPU/CUDA kernels. Here each
op gets a fake kernel (shapes only, so torch.compile / FakeTensor can trace it) and the
forward ops get autograd formulas that call the backward ops.

The layer ops take four optional regularisers last (input_keep, recurrent_keep,
zoneout_h, zoneout_c; see csrc/ops.cpp): they are inputs, never differentiated (their
gradient is None), and backward gets them back to recompute what the forward did.
"""
from __future__ import annotations

import torch

from . import _C  # noqa: F401  (loading the library registers torch.ops.torchlstm.*)

ops = torch.ops.torchlstm


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels keep cell states in (and save them for backward in): float32
    for float16/bfloat16 inputs (CUDA), else the input's own."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# --------------------------------------------------------------------------- fake kernels
# Every real kernel returns fresh contiguous tensors, so the fakes do too (new_empty with
# a shape, never empty_like, which would copy an input's strides).
@torch.library.register_fake("torchlstm::layer_forward")
def _layer_forward_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse,
                        activation, recurrent_activation, input_keep=None, recurrent_keep=None,
                        zoneout_h=None, zoneout_c=None):
    torch._check(input.dim() == 3, lambda: "torchlstm.layer_forward: input must be 3-D")
    T, B, _ = input.shape
    H = w_ih.shape[0] // 4
    Hout = w_hr.shape[0] if w_hr is not None else H
    return (input.new_empty(T, B, Hout), input.new_empty(B, Hout), input.new_empty(B, H),
            input.new_empty(T, B, 4 * H), input.new_empty(T, B, H, dtype=acc_dtype(input.dtype)))


@torch.library.register_fake("torchlstm::layer_inference")
def _layer_inference_fake(*args):
    return _layer_forward_fake(*args)[:3]


@torch.library.register_fake("torchlstm::layer_backward")
def _layer_backward_fake(grad_output, grad_hn, grad_cn, input, h0, c0, w_ih, w_hh, w_hr,
                         mask, output, gates, cs, reverse, activation, recurrent_activation,
                         input_keep=None, recurrent_keep=None, zoneout_h=None, zoneout_c=None):
    H = w_ih.shape[0] // 4
    return (input.new_empty(input.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), w_ih.new_empty(4 * H),
            w_hr.new_empty(w_hr.shape) if w_hr is not None else w_ih.new_empty(0))


@torch.library.register_fake("torchlstm::cell_forward")
def _cell_forward_fake(input, hx, cx, w_ih, w_hh, b_ih, b_hh, activation,
                       recurrent_activation):
    torch._check(input.dim() == 2, lambda: "torchlstm.cell_forward: input must be 2-D")
    B = input.shape[0]
    H = w_ih.shape[0] // 4
    return input.new_empty(B, H), input.new_empty(B, H), input.new_empty(B, 4 * H)


@torch.library.register_fake("torchlstm::cell_backward")
def _cell_backward_fake(grad_h, grad_c, input, hx, cx, w_ih, w_hh, h, c, gates, activation,
                        recurrent_activation):
    H = w_ih.shape[0] // 4
    return (input.new_empty(input.shape), hx.new_empty(hx.shape), cx.new_empty(cx.shape),
            w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), w_ih.new_empty(4 * H))


# --------------------------------------------------------------------------- autograd
def _layer_setup_context(ctx, inputs, output):
    (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse, activation,
     recurrent_activation) = inputs[:12]
    regularizers = tuple(inputs[12:]) + (None,) * (16 - len(inputs))
    out, _h_n, _c_n, gates, cs = output
    ctx.save_for_backward(input, h0, c0, w_ih, w_hh, w_hr, mask, out, gates, cs, *regularizers)
    ctx.num_inputs = len(inputs)
    ctx.has_b_ih = b_ih is not None
    ctx.has_b_hh = b_hh is not None
    ctx.reverse = reverse
    ctx.activation = activation
    ctx.recurrent_activation = recurrent_activation
    ctx.mark_non_differentiable(gates, cs)
    # Unused outputs (h_n, c_n, and always gates and cs) get None, not zero-filled
    # tensors: the backward op treats a missing gradient as zero at no cost.
    ctx.set_materialize_grads(False)


def _layer_backward(ctx, grad_out, grad_hn, grad_cn, _grad_gates, _grad_cs):
    (input, h0, c0, w_ih, w_hh, w_hr, mask, out, gates, cs,
     *regularizers) = ctx.saved_tensors
    d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias, d_w_hr = ops.layer_backward(
        grad_out, grad_hn, grad_cn, input, h0, c0, w_ih, w_hh, w_hr, mask, out, gates, cs,
        ctx.reverse, ctx.activation, ctx.recurrent_activation, *regularizers)
    # nothing flows to mask, reverse, the activation ids or the four regularisers
    return (d_input, d_h0, d_c0, d_w_ih, d_w_hh,
            d_bias if ctx.has_b_ih else None, d_bias if ctx.has_b_hh else None,
            d_w_hr if w_hr is not None else None) + (None,) * (ctx.num_inputs - 8)


torch.library.register_autograd("torchlstm::layer_forward", _layer_backward,
                                setup_context=_layer_setup_context)


def _cell_setup_context(ctx, inputs, output):
    input, hx, cx, w_ih, w_hh, b_ih, b_hh, activation, recurrent_activation = inputs
    h, c, gates = output
    ctx.save_for_backward(input, hx, cx, w_ih, w_hh, h, c, gates)
    ctx.has_b_ih = b_ih is not None
    ctx.has_b_hh = b_hh is not None
    ctx.activation = activation
    ctx.recurrent_activation = recurrent_activation
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)


def _cell_backward(ctx, grad_h, grad_c, _grad_gates):
    input, hx, cx, w_ih, w_hh, h, c, gates = ctx.saved_tensors
    d_input, d_hx, d_cx, d_w_ih, d_w_hh, d_bias = ops.cell_backward(
        grad_h, grad_c, input, hx, cx, w_ih, w_hh, h, c, gates, ctx.activation,
        ctx.recurrent_activation)
    return (d_input, d_hx, d_cx, d_w_ih, d_w_hh, d_bias if ctx.has_b_ih else None,
            d_bias if ctx.has_b_hh else None, None, None)


torch.library.register_autograd("torchlstm::cell_forward", _cell_backward,
                                setup_context=_cell_setup_context)


# Double backward (create_graph=True through the LSTM, e.g. gradient penalties) is not
# implemented: the backward ops' own backward raises, instead of autograd's fallback
# silently returning wrong numbers.
def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "torchlstm: double backward (a gradient of a gradient through torchlstm.LSTM / "
        "LSTMCell, e.g. autograd.grad(..., create_graph=True) followed by backward) is not "
        "supported yet")


for _name in ("layer_backward", "cell_backward"):
    torch.library.register_autograd(f"torchlstm::{_name}", _no_double_backward,
                                    setup_context=lambda ctx, inputs, output: None)
