"""Bad inputs, as a table: each row does one bad thing and names the exception it must
raise and the words its message must contain.

Covered: the constructors of LSTM / LSTMCell / RNN, forward (dtypes, devices including
parameters replaced by ``device="meta"`` tensors, shapes of input / hx / mask, non-tensors),
state_dict loading (as nn does) and every op in torch.ops.torchlstm (layer_forward,
layer_inference, layer_backward) with None for required tensors, meta tensors, wrong dtypes
and wrong shapes. Every tensor argument of an op is checked against the input's device and
named in the message.

Then what must be ACCEPTED (as nn accepts it), and the layouts that must work and give the
contiguous result: non-contiguous and stride-0 (expanded) arguments of every op and of the
modules. The LSTMCell is tested through its module API only (it runs on the layer ops).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, NamedTuple, Optional

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import torchlstm
from torchlstm import activations

ops = torch.ops.torchlstm
TANH, SIGMOID = activations.resolve("tanh"), activations.resolve("sigmoid")
# Messages that are an internal error, not an answer: never acceptable for a bad input.
INTERNAL = ("UNKNOWN_SCALAR", "undefined Tensor", "sym_strides", "INTERNAL ASSERT",
            "Cannot copy out of meta tensor")


class Row(NamedTuple):
    id: str
    do: Callable[[], object]  # does the bad thing
    exc: object  # the exception type (or a tuple of acceptable types)
    words: tuple  # each a str the message must contain, or a tuple of alternatives
    nn: Optional[Callable[[], object]] = None  # the same bad thing on torch.nn, if it has one


def check_message(msg: str, words) -> None:
    for w in words:
        alternatives = (w,) if isinstance(w, str) else w
        assert any(a in msg for a in alternatives), \
            f"the message does not contain {' or '.join(map(repr, alternatives))}: {msg!r}"
    for bad in INTERNAL:
        assert bad not in msg, f"an internal error, not a clear message: {msg!r}"


# ============================================================== the constructors
def lstm(*a, **k):
    return lambda: torchlstm.LSTM(*a, **k)


def cell(*a, **k):
    return lambda: torchlstm.LSTMCell(*a, **k)


def rnn(*a, **k):
    return lambda: torchlstm.RNN(*a, **k)


NN_LSTM = lambda *a, **k: (lambda: nn.LSTM(*a, **k))  # noqa: E731

CONSTRUCTOR_ROWS = [
    Row("LSTM-input_size-0", lstm(0, 4), ValueError, ("input_size",), NN_LSTM(0, 4)),
    Row("LSTM-hidden_size-negative", lstm(3, -2), ValueError, ("hidden_size",), NN_LSTM(3, -2)),
    Row("LSTM-input_size-float", lstm(3.0, 4), TypeError, ("input_size", "float"),
        NN_LSTM(3.0, 4)),
    Row("LSTM-hidden_size-str", lstm(3, "4"), TypeError, ("hidden_size", "str"),
        NN_LSTM(3, "4")),
    Row("LSTM-num_layers-0", lstm(3, 4, num_layers=0), ValueError, ("num_layers",),
        NN_LSTM(3, 4, num_layers=0)),
    Row("LSTM-num_layers-float", lstm(3, 4, num_layers=2.0), TypeError, ("num_layers",)),
    Row("LSTM-dropout-above-1", lstm(3, 4, dropout=1.5), ValueError, ("dropout",),
        NN_LSTM(3, 4, dropout=1.5)),
    Row("LSTM-dropout-negative", lstm(3, 4, dropout=-0.1), ValueError, ("dropout",),
        NN_LSTM(3, 4, dropout=-0.1)),
    Row("LSTM-dropout-str", lstm(3, 4, dropout="a"), ValueError, ("dropout",)),
    Row("LSTM-bias-int", lstm(3, 4, bias=1), TypeError, ("bias",), NN_LSTM(3, 4, bias=1)),
    Row("LSTM-batch_first-str", lstm(3, 4, batch_first="yes"), TypeError, ("batch_first",),
        NN_LSTM(3, 4, batch_first="yes")),
    Row("LSTM-proj_size-negative", lstm(3, 4, proj_size=-1), ValueError, ("proj_size",),
        NN_LSTM(3, 4, proj_size=-1)),
    Row("LSTM-proj_size-not-below-hidden", lstm(3, 4, proj_size=4), ValueError,
        ("proj_size", "hidden_size"), NN_LSTM(3, 4, proj_size=4)),
    Row("LSTM-proj_size-float", lstm(3, 4, proj_size=1.0), TypeError, ("proj_size",),
        NN_LSTM(3, 4, proj_size=1.0)),
    Row("LSTM-activation-unknown", lstm(3, 4, activation="swishy"), ValueError,
        ("activation", "swishy")),
    Row("LSTM-recurrent_activation-int", lstm(3, 4, recurrent_activation=3), TypeError,
        ("recurrent_activation",)),
    Row("LSTM-init-unknown", lstm(3, 4, init="xavier"), ValueError, ("init", "xavier")),
    Row("LSTM-unit_forget_bias-int", lstm(3, 4, unit_forget_bias=1), TypeError,
        ("unit_forget_bias",)),
    Row("LSTM-peephole-int", lstm(3, 4, peephole=1), TypeError, ("peephole", "bool")),
    Row("LSTMCell-peephole-str", lambda: torchlstm.LSTMCell(3, 4, peephole="yes"), TypeError,
        ("peephole", "bool")),
    Row("LSTM-layer_norm-int", lstm(3, 4, layer_norm=1), TypeError, ("layer_norm", "bool")),
    Row("LSTMCell-layer_norm-str", lambda: torchlstm.LSTMCell(3, 4, layer_norm="yes"),
        TypeError, ("layer_norm", "bool")),
    Row("LSTM-layer_norm_eps-0", lstm(3, 4, layer_norm=True, layer_norm_eps=0), ValueError,
        ("layer_norm_eps", "positive")),
    Row("LSTMCell-layer_norm_eps-nan",
        lambda: torchlstm.LSTMCell(3, 4, layer_norm=True, layer_norm_eps=float("nan")),
        ValueError, ("layer_norm_eps",)),
    Row("LSTM-return_sequences-int", lstm(3, 4, return_sequences=1), TypeError,
        ("return_sequences",)),
    Row("LSTM-return_state-str", lstm(3, 4, return_state="yes"), TypeError, ("return_state",)),
    Row("LSTM-go_backwards-str", lstm(3, 4, go_backwards="x"), TypeError, ("go_backwards",)),
    Row("LSTM-stateful-int", lstm(3, 4, stateful=1), TypeError, ("stateful",)),
    Row("LSTM-zero_output_for_mask-None", lstm(3, 4, zero_output_for_mask=None), TypeError,
        ("zero_output_for_mask",)),
    Row("LSTM-input_dropout-negative", lstm(3, 4, input_dropout=-0.1), ValueError,
        ("input_dropout",)),
    Row("LSTM-recurrent_dropout-1", lstm(3, 4, recurrent_dropout=1.0), ValueError,
        ("recurrent_dropout",)),
    Row("LSTM-zoneout-1", lstm(3, 4, zoneout=1.0), ValueError, ("zoneout",)),
    Row("LSTM-zoneout-three-rates", lstm(3, 4, zoneout=(0.1, 0.2, 0.3)), ValueError,
        ("zoneout",)),
    Row("LSTM-seed-float", lstm(3, 4, seed=1.5), TypeError, ("seed",)),
    Row("LSTM-seed-2**70", lstm(3, 4, seed=2**70), (ValueError, OverflowError), ("seed",)),
    Row("LSTM-seed-minus-2**70", lstm(3, 4, seed=-2**70), (ValueError, OverflowError),
        ("seed",)),
    Row("LSTMCell-input_size-negative", cell(-1, 5), ValueError, ("input_size",)),
    Row("LSTMCell-hidden_size-negative", cell(5, -1), ValueError, ("hidden_size",)),
    Row("LSTMCell-input_size-float", cell(2.0, 4), TypeError, ("input_size",),
        lambda: nn.LSTMCell(2.0, 4)),
    Row("LSTMCell-hidden_size-str", cell(2, "4"), TypeError, ("hidden_size",),
        lambda: nn.LSTMCell(2, "4")),
    Row("LSTMCell-activation-not-elementwise", cell(3, 4, activation="softmax"), ValueError,
        ("element-wise",)),
    Row("LSTMCell-init-unknown", cell(3, 4, init="he"), ValueError, ("init",)),
    Row("LSTMCell-zoneout-negative", cell(3, 4, zoneout=-0.5), ValueError, ("zoneout",)),
    Row("LSTMCell-seed-2**70", cell(3, 4, seed=2**70), (ValueError, OverflowError),
        ("seed",)),
    Row("LSTMCell-seed-str", cell(3, 4, seed="1"), TypeError, ("seed",)),
    Row("RNN-cell-nn.LSTMCell", rnn(nn.LSTMCell(3, 4)), TypeError, ("torchlstm.LSTMCell",)),
    Row("RNN-cell-str", rnn("lstm"), TypeError, ("torchlstm.LSTMCell", "str")),
    Row("RNN-return_sequences-int", rnn(torchlstm.LSTMCell(3, 4), return_sequences=1),
        TypeError, ("return_sequences",)),
    Row("RNN-return_state-str", rnn(torchlstm.LSTMCell(3, 4), return_state="no"), TypeError,
        ("return_state",)),
    Row("RNN-go_backwards-int", rnn(torchlstm.LSTMCell(3, 4), go_backwards=1), TypeError,
        ("go_backwards",)),
    Row("RNN-stateful-str", rnn(torchlstm.LSTMCell(3, 4), stateful="x"), TypeError,
        ("stateful",)),
]


# ============================================================== forward
def _lstm(**kw):
    torch.manual_seed(0)
    return torchlstm.LSTM(4, 8, **kw)


def _with_param(make, name, value):
    """A module from make() with parameter ``name`` replaced by ``value()`` (a Parameter,
    or None set as an attribute, as a user would)."""
    m = make()
    v = value()
    setattr(m, name, nn.Parameter(v) if isinstance(v, torch.Tensor) else v)
    return m


def _run(make_module, *args, grad=True, **kw):
    def f():
        m = make_module()
        with torch.set_grad_enabled(grad):
            out = m(*args, **kw)
        return out
    return f


X = lambda *s, **k: torch.randn(*s, **k)  # noqa: E731
META = dict(device="meta")


def meta_param_rows():
    rows = []
    for grad in (True, False):
        mode = "train" if grad else "no_grad"
        for name, shape, kw in [
                ("weight_hh_l0", (32, 8), {}),
                ("weight_ih_l0", (32, 4), {}),
                ("bias_ih_l0", (32,), {}),
                ("bias_hh_l0", (32,), {}),
                ("weight_hr_l0", (2, 8), dict(proj_size=2)),
                ("weight_hh_l1", (32, 8), dict(num_layers=2)),
                ("weight_ih_l1", (32, 8), dict(num_layers=2)),
                ("bias_hh_l0_reverse", (32,), dict(bidirectional=True))]:
            make = (lambda name=name, shape=shape, kw=kw:
                    _with_param(lambda: _lstm(**kw), name, lambda: torch.randn(shape, **META)))
            nn_make = (lambda name=name, shape=shape, kw=kw: _with_param(
                lambda: nn.LSTM(4, 8, **kw), name, lambda: torch.randn(shape, **META)))
            rows.append(Row(f"LSTM-forward-meta-{name}-{mode}", _run(make, X(5, 3, 4), grad=grad),
                            RuntimeError, ("meta",), _run(nn_make, X(5, 3, 4), grad=grad)))
        for name, shape in [("weight_hh", (32, 8)), ("weight_ih", (32, 4)), ("bias_ih", (32,)),
                            ("bias_hh", (32,))]:
            make = (lambda name=name, shape=shape: _with_param(
                lambda: torchlstm.LSTMCell(4, 8), name, lambda: torch.randn(shape, **META)))
            rows.append(Row(f"LSTMCell-forward-meta-{name}-{mode}",
                            _run(make, X(3, 4), grad=grad), RuntimeError, ("meta",)))
        make = lambda: torchlstm.RNN(_with_param(  # noqa: E731
            lambda: torchlstm.LSTMCell(4, 8), "weight_hh", lambda: torch.randn(32, 8, **META)))
        rows.append(Row(f"RNN-forward-meta-cell.weight_hh-{mode}", _run(make, X(3, 5, 4), grad=grad),
                        RuntimeError, ("meta",)))
    return rows


def none_param_rows():
    rows = []
    for name in ("bias_ih_l0", "bias_hh_l0", "weight_hh_l0", "weight_ih_l0"):
        make = lambda name=name: _with_param(_lstm, name, lambda: None)  # noqa: E731
        nn_make = lambda name=name: _with_param(  # noqa: E731
            lambda: nn.LSTM(4, 8), name, lambda: None)
        # nn.LSTM's own error for weight_ih_l0 is an AttributeError of its input check: only
        # the exception type of the others is compared with nn's
        rows.append(Row(f"LSTM-forward-{name}-None", _run(make, X(5, 3, 4)), TypeError,
                        ("None", name),
                        None if name == "weight_ih_l0" else _run(nn_make, X(5, 3, 4))))
    make = lambda: _with_param(lambda: _lstm(num_layers=2), "bias_ih_l1", lambda: None)  # noqa
    nn_make = lambda: _with_param(lambda: nn.LSTM(4, 8, num_layers=2), "bias_ih_l1",  # noqa
                                  lambda: None)
    rows.append(Row("LSTM-forward-bias_ih_l1-None", _run(make, X(5, 3, 4)), TypeError, ("None",),
                    _run(nn_make, X(5, 3, 4))))
    return rows


def _packed_f64():
    return pack_padded_sequence(X(5, 2, 4, dtype=torch.float64), torch.tensor([5, 3]))


FORWARD_ROWS = meta_param_rows() + none_param_rows() + [
    Row("LSTM-forward-input-4D", _run(_lstm, X(5, 3, 2, 4)), ValueError, ("2D or 3D",)),
    Row("LSTM-forward-input-1D", _run(_lstm, X(4)), ValueError, ("2D or 3D",)),
    Row("LSTM-forward-input-features", _run(_lstm, X(5, 3, 6)), RuntimeError, ("input_size",),
        _run(lambda: nn.LSTM(4, 8), X(5, 3, 6))),
    Row("LSTM-forward-input-float64", _run(_lstm, X(5, 3, 4, dtype=torch.float64)), ValueError,
        ("dtype", "float64"), _run(lambda: nn.LSTM(4, 8), X(5, 3, 4, dtype=torch.float64))),
    Row("LSTM-forward-input-int64", _run(_lstm, torch.ones(5, 3, 4, dtype=torch.long)),
        ValueError, ("dtype", "int64"),
        _run(lambda: nn.LSTM(4, 8), torch.ones(5, 3, 4, dtype=torch.long))),
    Row("LSTM-forward-input-meta", _run(_lstm, X(5, 3, 4, **META)), RuntimeError, ("meta",),
        _run(lambda: nn.LSTM(4, 8), X(5, 3, 4, **META))),
    Row("LSTM-forward-input-list", _run(_lstm, [[1.0] * 4] * 5), (TypeError, AttributeError),
        ("list",), _run(lambda: nn.LSTM(4, 8), [[1.0] * 4] * 5)),
    Row("LSTM-forward-input-None", _run(_lstm, None), (TypeError, AttributeError), ("None",),
        _run(lambda: nn.LSTM(4, 8), None)),
    Row("LSTM-forward-seq_len-0", _run(_lstm, X(0, 3, 4)), RuntimeError, ("sequence length",),
        _run(lambda: nn.LSTM(4, 8), X(0, 3, 4))),
    Row("LSTM-forward-packed-float64", _run(_lstm, _packed_f64()), ValueError, ("dtype",)),
    Row("LSTM-forward-hx-tensor", _run(_lstm, X(5, 3, 4), X(1, 3, 8)), TypeError, ("hx",)),
    Row("LSTM-forward-hx-one-tensor", _run(_lstm, X(5, 3, 4), (X(1, 3, 8),)), TypeError, ("hx",)),
    Row("LSTM-forward-hx-None-inside", _run(_lstm, X(5, 3, 4), (X(1, 3, 8), None)), TypeError,
        ("hx",)),
    Row("LSTM-forward-h0-shape", _run(_lstm, X(5, 3, 4), (X(1, 2, 8), X(1, 3, 8))),
        RuntimeError, ("hidden[0] size",),
        _run(lambda: nn.LSTM(4, 8), X(5, 3, 4), (X(1, 2, 8), X(1, 3, 8)))),
    Row("LSTM-forward-c0-shape", _run(_lstm, X(5, 3, 4), (X(1, 3, 8), X(1, 3, 7))),
        RuntimeError, ("hidden[1] size",),
        _run(lambda: nn.LSTM(4, 8), X(5, 3, 4), (X(1, 3, 8), X(1, 3, 7)))),
    Row("LSTM-forward-hx-2D-for-batched", _run(_lstm, X(5, 3, 4), (X(3, 8), X(3, 8))),
        RuntimeError, ("3-D",), _run(lambda: nn.LSTM(4, 8), X(5, 3, 4), (X(3, 8), X(3, 8)))),
    Row("LSTM-forward-hx-3D-for-unbatched", _run(_lstm, X(5, 4), (X(1, 1, 8), X(1, 1, 8))),
        RuntimeError, ("2-D",), _run(lambda: nn.LSTM(4, 8), X(5, 4), (X(1, 1, 8), X(1, 1, 8)))),
    Row("LSTM-forward-h0-float64",
        _run(_lstm, X(5, 3, 4), (X(1, 3, 8, dtype=torch.float64), X(1, 3, 8))), RuntimeError,
        ("hx[0]", "dtype")),
    Row("LSTM-forward-c0-meta", _run(_lstm, X(5, 3, 4), (X(1, 3, 8), X(1, 3, 8, **META))),
        RuntimeError, ("hx[1]", "meta")),
    Row("LSTM-forward-h0-meta", _run(_lstm, X(5, 3, 4), (X(1, 3, 8, **META), X(1, 3, 8))),
        RuntimeError, ("meta",),
        _run(lambda: nn.LSTM(4, 8), X(5, 3, 4), (X(1, 3, 8, **META), X(1, 3, 8)))),
    Row("LSTM-forward-mask-shape", _run(_lstm, X(5, 3, 4), mask=torch.ones(3, 5, dtype=torch.bool)),
        ValueError, ("mask", "shape")),
    Row("LSTM-forward-mask-batch_first-layout",
        _run(lambda: _lstm(batch_first=True), X(3, 5, 4), mask=torch.ones(5, 3, dtype=torch.bool)),
        ValueError, ("mask", "(batch, seq_len)")),
    Row("LSTM-forward-mask-float", _run(_lstm, X(5, 3, 4), mask=torch.ones(5, 3)), TypeError,
        ("mask", "bool")),
    Row("LSTM-forward-mask-list", _run(_lstm, X(5, 3, 4), mask=[[True] * 3] * 5), TypeError,
        ("mask",)),
    Row("LSTM-forward-mask-meta",
        _run(_lstm, X(5, 3, 4), mask=torch.ones(5, 3, dtype=torch.bool, **META)), RuntimeError,
        ("mask", "meta")),
    Row("LSTM-forward-mask-with-packed",
        _run(_lstm, pack_padded_sequence(X(5, 2, 4), torch.tensor([5, 3])),
             mask=torch.ones(5, 2, dtype=torch.bool)), ValueError, ("mask", "PackedSequence")),
    # the peephole weights replaced by a user: None (named), or a wrong size (named, with
    # the expected shape, by the op's check)
    Row("LSTM-forward-weight_ch-None",
        _run(lambda: _with_param(lambda: _lstm(peephole=True), "weight_ch_l0", lambda: None),
             X(5, 3, 4)), TypeError, ("weight_ch_l0", "None")),
    Row("LSTM-forward-weight_ch-shape",
        _run(lambda: _with_param(lambda: _lstm(peephole=True), "weight_ch_l0",
                                 lambda: torch.zeros(8)), X(5, 3, 4)), ValueError,
        ("w_ch", "[24]", "3*hidden_size")),
    Row("LSTMCell-forward-weight_ch-float64",
        _run(lambda: _with_param(lambda: torchlstm.LSTMCell(4, 8, peephole=True), "weight_ch",
                                 lambda: torch.zeros(24, dtype=torch.float64)), X(3, 4)),
        TypeError, ("w_ch", "dtype")),
    # the layer-norm parameters replaced by a user: None, a wrong size, dtype (named)
    Row("LSTM-forward-ln_weight_hh-None",
        _run(lambda: _with_param(lambda: _lstm(layer_norm=True), "ln_weight_hh_l0", lambda: None),
             X(5, 3, 4)), TypeError, ("ln_weight_hh_l0", "None")),
    Row("LSTM-forward-ln_weight_ih-shape",
        _run(lambda: _with_param(lambda: _lstm(layer_norm=True), "ln_weight_ih_l0",
                                 lambda: torch.ones(8)), X(5, 3, 4)), ValueError,
        ("ln_weight_ih", "[32]", "4*hidden_size")),
    Row("LSTM-forward-ln_bias_c-shape",
        _run(lambda: _with_param(lambda: _lstm(layer_norm=True), "ln_bias_c_l0",
                                 lambda: torch.zeros(32)), X(5, 3, 4)), ValueError,
        ("ln_bias_c", "[8]", "hidden_size")),
    Row("LSTMCell-forward-ln_weight_c-float64",
        _run(lambda: _with_param(lambda: torchlstm.LSTMCell(4, 8, layer_norm=True),
                                 "ln_weight_c", lambda: torch.ones(8, dtype=torch.float64)),
             X(3, 4)), TypeError, ("ln_weight_c", "dtype")),
    Row("LSTM-forward-layer_norm-complex",
        _run(lambda: _lstm(layer_norm=True).to(torch.complex64),
             torch.randn(5, 3, 4, dtype=torch.complex64)), TypeError,
        ("layer norm", "complex", "real dtypes")),
    Row("LSTMCell-forward-input-3D", _run(lambda: torchlstm.LSTMCell(4, 8), X(2, 3, 4)),
        ValueError, ("1D or 2D",), _run(lambda: nn.LSTMCell(4, 8), X(2, 3, 4))),
    Row("LSTMCell-forward-input-features", _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 5)),
        RuntimeError, ("input_size",), _run(lambda: nn.LSTMCell(4, 8), X(3, 5))),
    Row("LSTMCell-forward-input-float64",
        _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 4, dtype=torch.float64)), ValueError,
        ("dtype",)),
    Row("LSTMCell-forward-input-meta", _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 4, **META)),
        RuntimeError, ("meta",)),
    Row("LSTMCell-forward-input-list", _run(lambda: torchlstm.LSTMCell(4, 8), [[1.0] * 4]),
        (TypeError, AttributeError), ("list",), _run(lambda: nn.LSTMCell(4, 8), [[1.0] * 4])),
    Row("LSTMCell-forward-hx-batch", _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 4),
                                          (X(2, 8), X(2, 8))), RuntimeError, ("batch size",),
        _run(lambda: nn.LSTMCell(4, 8), X(3, 4), (X(2, 8), X(2, 8)))),
    Row("LSTMCell-forward-hx-hidden", _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 4),
                                           (X(3, 7), X(3, 7))), RuntimeError, ("hidden_size",),
        _run(lambda: nn.LSTMCell(4, 8), X(3, 4), (X(3, 7), X(3, 7)))),
    Row("LSTMCell-forward-hx-tensor", _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 4), X(3, 8)),
        TypeError, ("hx",)),
    Row("LSTMCell-forward-hx-1D-for-2D", _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 4),
                                              (X(8), X(8))), ValueError, ("hx[0]",)),
    Row("LSTMCell-forward-hx-meta", _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 4),
                                         (X(3, 8), X(3, 8, **META))), RuntimeError, ("meta",)),
    Row("LSTMCell-forward-hx-float64", _run(lambda: torchlstm.LSTMCell(4, 8), X(3, 4),
                                            (X(3, 8, dtype=torch.float64), X(3, 8))),
        RuntimeError, ("hx[0]", "dtype")),
    Row("RNN-forward-input-4D", _run(lambda: torchlstm.RNN(torchlstm.LSTMCell(4, 8)),
                                     X(2, 3, 5, 4)), ValueError, ("3D",)),
    Row("RNN-forward-input-list", _run(lambda: torchlstm.RNN(torchlstm.LSTMCell(4, 8)),
                                       [[1.0] * 4]), ValueError, ("list",)),
    Row("RNN-forward-input-features", _run(lambda: torchlstm.RNN(torchlstm.LSTMCell(4, 8)),
                                           X(2, 3, 5)), RuntimeError, ("input_size",)),
    Row("RNN-forward-input-meta", _run(lambda: torchlstm.RNN(torchlstm.LSTMCell(4, 8)),
                                       X(2, 3, 4, **META)), RuntimeError, ("meta",)),
    Row("RNN-forward-initial_state-tensor",
        _run(lambda: torchlstm.RNN(torchlstm.LSTMCell(4, 8)), X(2, 3, 4), X(2, 8)), TypeError,
        ("initial_state",)),
    Row("RNN-forward-initial_state-batch",
        _run(lambda: torchlstm.RNN(torchlstm.LSTMCell(4, 8)), X(2, 3, 4), (X(3, 8), X(3, 8))),
        RuntimeError, ("batch size",)),
    Row("RNN-forward-mask-shape",
        _run(lambda: torchlstm.RNN(torchlstm.LSTMCell(4, 8)), X(2, 3, 4),
             mask=torch.ones(3, 2, dtype=torch.bool)), ValueError, ("mask",)),
]


# ============================================================== state_dict loading (as nn)
def _load(make, edit, strict=True):
    def f():
        m = make()
        sd = dict(make().state_dict())
        edit(sd)
        return m.load_state_dict(sd, strict=strict)
    return f


def _del(key):
    return lambda sd: sd.pop(key)


def _put(key, value):
    return lambda sd: sd.__setitem__(key, value)


STATE_DICT_ROWS = []
for _cls_name, _ours, _ref in [("LSTM", lambda: torchlstm.LSTM(4, 8, num_layers=2),
                                lambda: nn.LSTM(4, 8, num_layers=2))]:
    STATE_DICT_ROWS += [
        Row(f"{_cls_name}-load-missing-key", _load(_ours, _del("bias_hh_l1")), RuntimeError,
            ("Missing key(s)", "bias_hh_l1"), _load(_ref, _del("bias_hh_l1"))),
        Row(f"{_cls_name}-load-extra-key", _load(_ours, _put("weight_hr_l0", torch.zeros(2, 8))),
            RuntimeError, ("Unexpected key(s)", "weight_hr_l0"),
            _load(_ref, _put("weight_hr_l0", torch.zeros(2, 8)))),
        Row(f"{_cls_name}-load-wrong-shape", _load(_ours, _put("weight_ih_l0", torch.zeros(32, 5))),
            RuntimeError, ("size mismatch", "weight_ih_l0"),
            _load(_ref, _put("weight_ih_l0", torch.zeros(32, 5)))),
        Row(f"{_cls_name}-load-wrong-shape-non-strict",
            _load(_ours, _put("weight_hh_l1", torch.zeros(32, 7)), strict=False), RuntimeError,
            ("size mismatch", "weight_hh_l1"),
            _load(_ref, _put("weight_hh_l1", torch.zeros(32, 7)), strict=False)),
    ]
STATE_DICT_ROWS += [
    Row("LSTM-load-nn-state-of-other-layout",
        lambda: torchlstm.LSTM(4, 8).load_state_dict(nn.LSTM(4, 8, proj_size=2).state_dict()),
        RuntimeError, ("Unexpected key(s)", "weight_hr_l0", "size mismatch", "weight_hh_l0"),
        lambda: nn.LSTM(4, 8).load_state_dict(nn.LSTM(4, 8, proj_size=2).state_dict())),
    Row("LSTM-load-missing-reverse",
        lambda: torchlstm.LSTM(4, 8, bidirectional=True).load_state_dict(
            nn.LSTM(4, 8).state_dict()), RuntimeError, ("Missing key(s)", "weight_ih_l0_reverse"),
        lambda: nn.LSTM(4, 8, bidirectional=True).load_state_dict(nn.LSTM(4, 8).state_dict())),
    Row("LSTMCell-load-missing-key",
        _load(lambda: torchlstm.LSTMCell(4, 8), _del("bias_ih")), RuntimeError,
        ("Missing key(s)", "bias_ih"), _load(lambda: nn.LSTMCell(4, 8), _del("bias_ih"))),
    Row("LSTMCell-load-extra-key",
        lambda: torchlstm.LSTMCell(4, 8, bias=False).load_state_dict(
            nn.LSTMCell(4, 8).state_dict()), RuntimeError, ("Unexpected key(s)", "bias_ih"),
        lambda: nn.LSTMCell(4, 8, bias=False).load_state_dict(nn.LSTMCell(4, 8).state_dict())),
    Row("LSTMCell-load-wrong-shape",
        _load(lambda: torchlstm.LSTMCell(4, 8), _put("weight_hh", torch.zeros(32, 4))),
        RuntimeError, ("size mismatch", "weight_hh"),
        _load(lambda: nn.LSTMCell(4, 8), _put("weight_hh", torch.zeros(32, 4)))),
    Row("RNN-load-missing-key",
        _load(lambda: torchlstm.RNN(torchlstm.LSTMCell(4, 8)), _del("cell.weight_ih")),
        RuntimeError, ("Missing key(s)", "cell.weight_ih")),
    # the peephole weights (3H): a state_dict without them, or of the wrong size
    Row("LSTM-peephole-load-missing-key",
        _load(lambda: torchlstm.LSTM(4, 8, peephole=True), _del("weight_ch_l0")),
        RuntimeError, ("Missing key(s)", "weight_ch_l0")),
    Row("LSTM-peephole-load-wrong-shape",
        _load(lambda: torchlstm.LSTM(4, 8, peephole=True), _put("weight_ch_l0", torch.zeros(32))),
        RuntimeError, ("size mismatch", "weight_ch_l0")),
    Row("LSTM-layer_norm-load-missing-key",
        _load(lambda: torchlstm.LSTM(4, 8, layer_norm=True), _del("ln_bias_c_l0")),
        RuntimeError, ("Missing key(s)", "ln_bias_c_l0")),
    Row("LSTMCell-layer_norm-load-wrong-shape",
        _load(lambda: torchlstm.LSTMCell(4, 8, layer_norm=True),
              _put("ln_weight_hh", torch.ones(8))),
        RuntimeError, ("size mismatch", "ln_weight_hh")),
    Row("LSTMCell-peephole-load-wrong-shape",
        _load(lambda: torchlstm.LSTMCell(4, 8, peephole=True), _put("weight_ch", torch.zeros(8))),
        RuntimeError, ("size mismatch", "weight_ch")),
]


# ============================================================== the ops
T, B, I, H, P = 4, 3, 5, 6, 2  # P: proj_size
DT = torch.float64
FWD_NAMES = ["input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "mask", "reverse",
             "activation", "recurrent_activation", "input_keep", "recurrent_keep", "zoneout_h",
             "zoneout_c", "w_ch"]
BWD_NAMES = ["grad_output", "grad_hn", "grad_cn", "input", "h0", "c0", "w_ih", "w_hh", "w_hr",
             "mask", "output", "gates", "cs", "reverse", "activation", "recurrent_activation",
             "input_keep", "recurrent_keep", "zoneout_h", "zoneout_c", "w_ch"]
REG_NAMES = ["input_keep", "recurrent_keep", "zoneout_h", "zoneout_c"]


def fwd_args(proj=True, regs=True, seed=0) -> dict:
    """Every argument of layer_forward / layer_inference, by name: all tensors present
    (projection, mask, the four regularisers and the peephole weights included), float64."""
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=DT)
    Hout = P if proj else H
    a = dict(input=r(T, B, I), h0=r(B, Hout), c0=r(B, H), w_ih=r(4 * H, I), w_hh=r(4 * H, Hout),
             b_ih=r(4 * H), b_hh=r(4 * H), w_hr=r(P, H) if proj else None,
             mask=torch.rand(T, B, generator=g) > 0.3, reverse=False, activation=TANH,
             recurrent_activation=SIGMOID,
             input_keep=None, recurrent_keep=None, zoneout_h=None, zoneout_c=None,
             w_ch=r(3 * H))  # the peephole weights
    a["mask"][:, 0] = True
    if regs:
        a.update(input_keep=(torch.rand(B, I, generator=g, dtype=DT) > 0.2).to(DT) / 0.8,
                 recurrent_keep=(torch.rand(B, Hout, generator=g, dtype=DT) > 0.2).to(DT) / 0.8,
                 zoneout_h=(torch.rand(T, B, Hout, generator=g, dtype=DT) > 0.7).to(DT),
                 zoneout_c=(torch.rand(T, B, H, generator=g, dtype=DT) > 0.7).to(DT))
    return a


def bwd_args(proj=True, regs=True, seed=0) -> dict:
    """Every argument of layer_backward, from a layer_forward call on fwd_args."""
    a = fwd_args(proj, regs, seed)
    out, h_n, c_n, gates, cs = ops.layer_forward(*a.values())
    g = torch.Generator().manual_seed(seed + 1)
    b = dict(grad_output=torch.randn(out.shape, generator=g, dtype=DT),
             grad_hn=torch.randn(h_n.shape, generator=g, dtype=DT),
             grad_cn=torch.randn(c_n.shape, generator=g, dtype=DT), output=out, gates=gates, cs=cs)
    return {n: (b[n] if n in b else a[n]) for n in BWD_NAMES}


OPS = {"layer_forward": (fwd_args, FWD_NAMES), "layer_inference": (fwd_args, FWD_NAMES),
       "layer_backward": (bwd_args, BWD_NAMES)}


def call(op_name, make_args=None, **override):
    make, names = OPS[op_name]
    a = (make_args or make)()
    for k, v in override.items():
        a[k] = v(a[k]) if callable(v) else v
    assert list(a) == names
    return getattr(ops, op_name)(*a.values())


def op_row(op_name, what, exc, words, **override):
    return Row(f"{op_name}-{what}", lambda: call(op_name, **override), exc, words)


def op_rows():
    rows = []
    for op_name, (make, names) in OPS.items():
        bwd = op_name == "layer_backward"
        tensors = [n for n in names if n not in ("reverse", "activation", "recurrent_activation")]
        required = ["input", "h0", "c0", "w_ih", "w_hh"] + (["output", "gates", "cs"] if bwd else [])
        for n in required:  # None for a required tensor names the argument
            rows.append(op_row(op_name, f"{n}-None", TypeError, (n, ("None", "undefined")),
                               **{n: None}))
        for n in tensors:  # a meta tensor among CPU ones: named, with the device
            words = ("device", "meta") if n == "input" else (n, "device")
            rows.append(op_row(op_name, f"{n}-meta", RuntimeError, words,
                               **{n: lambda t: t.to("meta")}))
        for n in tensors:  # the dtype
            if n == "mask":
                rows.append(op_row(op_name, "mask-float", TypeError, ("mask", "bool"),
                                   mask=lambda t: t.to(DT)))
            elif n == "input":
                rows.append(op_row(op_name, "input-int64", TypeError, ("input", "float"),
                                   input=lambda t: t.long()))
                rows.append(op_row(op_name, "input-complex", TypeError, ("input", "float"),
                                   input=lambda t: t.to(torch.complex128)))
            else:
                rows.append(op_row(op_name, f"{n}-float32", TypeError, (n, "dtype"),
                                   **{n: lambda t: t.float()}))
        for n in tensors:  # the shape
            if n == "input":
                rows.append(op_row(op_name, "input-2D", ValueError, ("input", "3-D"),
                                   input=lambda t: t[0]))
                continue
            if n == "w_ih":  # one column too many: input_size disagrees
                grow = lambda t: torch.cat([t, t[:, :1]], 1)  # noqa: E731
            elif n == "w_hr":  # one column too many: hidden_size disagrees
                grow = lambda t: torch.cat([t, t[:, :1]], 1)  # noqa: E731
            elif n in ("h0", "c0", "grad_hn", "grad_cn", "input_keep", "recurrent_keep"):
                grow = lambda t: torch.cat([t, t[:1]], 0)  # noqa: E731  one batch row too many
            else:  # one more along the last axis (or the only one)
                grow = lambda t: torch.cat([t, t[..., :1]], -1)  # noqa: E731
            rows.append(op_row(op_name, f"{n}-shape", ValueError, (n, "shape"), **{n: grow}))
        rows.append(op_row(op_name, "input-list", RuntimeError, ("input", "Tensor"),
                           input=[[1.0]]))
        rows.append(op_row(op_name, "activation-unknown", ValueError, ("activation", "117"),
                           activation=117))
        rows.append(op_row(op_name, "recurrent_activation-unknown", ValueError,
                           ("recurrent_activation",), recurrent_activation=-1))
    # no projection: w_hh must then be (4H, H)
    rows.append(Row("layer_forward-w_hh-shape-without-w_hr",
                    lambda: call("layer_forward", lambda: fwd_args(proj=False), w_hh=lambda t:
                                 t[:, :P]), ValueError, ("w_hh", "shape")))
    return rows


OP_ROWS = op_rows()
ROWS = CONSTRUCTOR_ROWS + FORWARD_ROWS + STATE_DICT_ROWS + OP_ROWS


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row):
    with pytest.raises(row.exc) as e:
        row.do()
    check_message(str(e.value), row.words)
    if row.nn is not None:  # the row encodes nn's behaviour: nn raises the same type
        with pytest.raises(row.exc):
            row.nn()


def test_row_ids_are_unique():
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids))
    # every op argument that is a tensor has a meta, a dtype and a shape row per op
    for op_name, (_, names) in OPS.items():
        for n in names:
            if n in ("reverse", "activation", "recurrent_activation"):
                continue
            assert f"{op_name}-{n}-meta" in ids
            assert f"{op_name}-{n}-shape" in ids or n == "input", (op_name, n)
            assert f"{op_name}-{n}-None" in ids or n not in (
                "input", "h0", "c0", "w_ih", "w_hh", "output", "gates", "cs"), (op_name, n)


# ============================================================== accepted, as nn accepts it
def _same_forward(ours, ref, *inputs, grad=True):
    """ours and ref (the same weights) give the same outputs and parameter gradients."""
    ours.load_state_dict(ref.state_dict())
    a, e = ours(*inputs), ref(*inputs)
    flat = lambda o: [t for t in (o if isinstance(o, tuple) else (o,))  # noqa: E731
                      for t in (t if isinstance(t, tuple) else (t,))]
    fa, fe = flat(a), flat(e)
    assert len(fa) == len(fe)
    for x, y in zip(fa, fe):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=2e-5)
    if grad:
        ga = torch.autograd.grad(sum(t.sum() for t in fa), list(ours.parameters()),
                                 allow_unused=True, materialize_grads=True)
        ge = torch.autograd.grad(sum(t.sum() for t in fe), list(ref.parameters()),
                                 allow_unused=True, materialize_grads=True)
        for x, y in zip(ga, ge):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=2e-5)


def accepted_bidirectional_int():
    built = nn.LSTM(10, 20, bidirectional=1)  # nn builds it (its forward then fails in _VF)
    m = torchlstm.LSTM(10, 20, bidirectional=1)
    assert list(m.state_dict()) == list(built.state_dict())
    ref = nn.LSTM(10, 20, bidirectional=True)
    ref.load_state_dict(built.state_dict())
    _same_forward(m, ref, torch.randn(3, 2, 10))


def accepted_cell_bias_int():
    ref = nn.LSTMCell(5, 5, bias=1)
    m = torchlstm.LSTMCell(5, 5, bias=1)
    assert list(m.state_dict()) == list(ref.state_dict()) == [
        "weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    _same_forward(m, ref, torch.randn(3, 5))


def accepted_cell_input_size_0():
    ref = nn.LSTMCell(0, 5)
    m = torchlstm.LSTMCell(0, 5)
    assert m.weight_ih.shape == ref.weight_ih.shape == (20, 0)
    _same_forward(m, ref, torch.randn(3, 0), (torch.randn(3, 5), torch.randn(3, 5)))


def accepted_cell_bias_None():
    """nn.LSTMCell runs with a bias set to None (as if it were zero): so does LSTMCell."""
    torch.manual_seed(0)
    ref = nn.LSTMCell(4, 8)
    m = torchlstm.LSTMCell(4, 8)
    m.load_state_dict(ref.state_dict())
    ref.bias_ih = None
    m.bias_ih = None
    x = torch.randn(3, 4)
    for a, e in zip(m(x), ref(x)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=2e-5)


def accepted_nn_state_dict():
    for kw in (dict(num_layers=2, bidirectional=True), dict(proj_size=3, bias=False)):
        ref = nn.LSTM(4, 8, **kw)
        m = torchlstm.LSTM(4, 8, **kw)
        m.load_state_dict(ref.state_dict())
        ref.load_state_dict(m.state_dict())
        _same_forward(m, ref, torch.randn(5, 2, 4))
    c = nn.LSTMCell(4, 8)
    torchlstm.LSTMCell(4, 8).load_state_dict(c.state_dict())


def accepted_large_seed():
    m = torchlstm.LSTM(3, 4, seed=2**63 - 1, input_dropout=0.5)
    m(torch.randn(2, 1, 3))


def accepted_ops_all_meta():
    """Every argument on meta: the ops' fake kernels give the output shapes (torch.compile
    and FakeTensor tracing rely on it)."""
    a = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in fwd_args().items()}
    out, h_n, c_n, gates, cs = ops.layer_forward(*a.values())
    assert out.device.type == "meta" and out.shape == (T, B, P) and cs.shape == (T, B, H)
    out2, _, _ = ops.layer_inference(*a.values())
    assert out2.shape == (T, B, P)
    b = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in bwd_args().items()}
    grads = ops.layer_backward(*b.values())
    assert [tuple(g.shape) for g in grads] == [(T, B, I), (B, P), (B, H), (4 * H, I),
                                               (4 * H, P), (4 * H,), (P, H), (3 * H,), (0,)]
    assert all(g.device.type == "meta" for g in grads)


def accepted_ops_optional_None():
    """The optional tensors may be None (undefined): no gradient for an output, no bias,
    no projection, no mask, no regularisers."""
    a = fwd_args(proj=False, regs=False)
    a.update(b_ih=None, b_hh=None, mask=None, w_ch=None)
    ops.layer_forward(*a.values())
    ops.layer_inference(*a.values())
    b = bwd_args()
    grads = ops.layer_backward(*dict(b, grad_output=None, grad_hn=None, grad_cn=None).values())
    assert all(torch.count_nonzero(g) == 0 for g in grads)  # no gradient in, none out
    ops.layer_backward(*dict(b, grad_hn=None, grad_cn=None).values())


ACCEPTED = [accepted_bidirectional_int, accepted_cell_bias_int, accepted_cell_input_size_0,
            accepted_cell_bias_None, accepted_nn_state_dict, accepted_large_seed,
            accepted_ops_all_meta, accepted_ops_optional_None]


@pytest.mark.parametrize("case", ACCEPTED, ids=[f.__name__[len("accepted_"):] for f in ACCEPTED])
def test_accepted(case):
    case()


# ============================================================== layouts that must work
def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values with a last-axis stride of 2 (not contiguous)."""
    big = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
    big[..., ::2] = t
    v = big[..., ::2]
    assert not v.is_contiguous() and torch.equal(v, t)
    return v


def expanded(t: torch.Tensor) -> torch.Tensor:
    """A stride-0 tensor of t's shape: t's first slice along axis 0 repeated."""
    v = t[:1].expand(t.shape)
    assert v.stride(0) == 0
    return v


LAYOUT_CASES = [(op_name, n, layout)
                for op_name, (_, names) in OPS.items()
                for n in names if n not in ("reverse", "activation", "recurrent_activation")
                for layout in ("noncontiguous", "expanded")]


@pytest.mark.parametrize("op_name,arg,layout", LAYOUT_CASES,
                         ids=[f"{o}-{n}-{lay}" for o, n, lay in LAYOUT_CASES])
def test_op_accepts_strided_arguments(op_name, arg, layout):
    """A non-contiguous or stride-0 argument gives exactly what its contiguous copy gives."""
    make, _ = OPS[op_name]
    a = make()
    odd = (noncontiguous if layout == "noncontiguous" else expanded)(a[arg])
    got = getattr(ops, op_name)(*dict(a, **{arg: odd}).values())
    want = getattr(ops, op_name)(*dict(a, **{arg: odd.contiguous()}).values())
    for i, (x, y) in enumerate(zip(got, want)):
        assert torch.equal(x, y), f"{op_name} result {i} differs with a {layout} {arg}"


@pytest.mark.parametrize("layout", ["noncontiguous", "expanded"])
def test_modules_accept_strided_inputs(layout):
    f = noncontiguous if layout == "noncontiguous" else expanded
    torch.manual_seed(0)
    m = torchlstm.LSTM(4, 8, num_layers=2, bidirectional=True, dtype=DT)
    x = f(torch.randn(5, 3, 4, dtype=DT))
    h0, c0 = f(torch.randn(4, 3, 8, dtype=DT)), f(torch.randn(4, 3, 8, dtype=DT))
    mask = f(torch.rand(5, 3) > 0.3)
    for args, kw in [((x,), {}), ((x, (h0, c0)), {}), ((x,), dict(mask=mask))]:
        got = m(*args, **kw)
        want = m(*[a.contiguous() if isinstance(a, torch.Tensor) else
                   tuple(t.contiguous() for t in a) for a in args],
                 **{k: v.contiguous() for k, v in kw.items()})
        assert torch.equal(got[0], want[0])
        assert torch.equal(got[1][0], want[1][0]) and torch.equal(got[1][1], want[1][1])
    c = torchlstm.LSTMCell(4, 8, dtype=DT)
    x1 = f(torch.randn(3, 4, dtype=DT))
    h1, c1 = f(torch.randn(3, 8, dtype=DT)), f(torch.randn(3, 8, dtype=DT))
    for a, e in zip(c(x1, (h1, c1)), c(x1.contiguous(), (h1.contiguous(), c1.contiguous()))):
        assert torch.equal(a, e)


# ============================================================== environment
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(torchlstm.__file__)))


def test_huge_cache_limit_does_not_turn_the_cache_off():
    """TORCHLSTM_CPU_CACHE_MB=2**44 (2**64 bytes) must either raise naming the variable
    or cap the limit; never wrap to 0 (the cache silently off)."""
    code = (
        "import torch, torchlstm\n"
        "from torchlstm import _C\n"
        "torch.set_num_threads(1)\n"
        "m = torchlstm.LSTM(64, 256)\n"
        "x = torch.randn(50, 32, 64, requires_grad=True)\n"
        "out, (h, c) = m(x); (out.sum() + c.sum()).backward()\n"
        "s = _C.cpu_cache_stats()\n"
        "print(s['limit_bytes'], s['cached_bytes'])\n")
    env = dict(os.environ, TORCHLSTM_CPU_CACHE_MB=str(2**44), OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        assert "TORCHLSTM_CPU_CACHE_MB" in r.stderr, r.stderr[-2000:]
        assert "Traceback" in r.stderr  # a Python exception, not a crash
        return
    limit, cached = map(int, r.stdout.split())
    assert limit >= 1 << 30, f"limit {limit} bytes: the huge value wrapped around"
    assert cached > 0, "the cache kept nothing: it is off"
