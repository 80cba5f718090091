"""Keras <-> torchlstm weights.

Keras keeps, per LSTM layer (and per direction of a Bidirectional one), ``kernel``
(input, 4u), ``recurrent_kernel`` (u, 4u) and one ``bias`` (4u), gates in the order
i, f, c, o — PyTorch's i, f, g, o. So kernel = weight_ih.T, recurrent_kernel =
weight_hh.T and bias = bias_ih + bias_hh (imported as bias_ih = bias, bias_hh = 0).

    arrays = keras_weights.get(lstm)          # what keras_layer.set_weights(arrays) takes
    keras_weights.set(lstm, keras_layer.get_weights())
    keras_weights.load_h5(lstm, "model.weights.h5", ["layers/lstm", "layers/lstm_1"])

For a stacked or bidirectional torchlstm.LSTM the arrays are layer by layer, forward
direction before backward (the order of Keras' Bidirectional.get_weights()).

Peepholes (``peephole=True``; Keras 3's LSTM has none): after each bias come three (u,)
arrays, the input, forget and output gates' peephole weights — the layout of
tf.keras.experimental.PeepholeLSTMCell's ``input_gate_peephole_weights``,
``forget_gate_peephole_weights``, ``output_gate_peephole_weights`` — weight_ch's thirds.

Layer normalisation (``layer_norm=True``; Keras 3's LSTM has none): after those, four
arrays — the scales of LN(x W) (4u,) and LN(h U) (4u,), in Keras' gate order i, f, c, o
(torch's), then the scale and shift of LN(c) (u,): ln_weight_ih, ln_weight_hh,
ln_weight_c, ln_bias_c as they are.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .cell import LSTMCell
from .lstm import LSTM
from .rnn import RNN


def _groups(module: nn.Module) -> list[tuple]:
    """(weight_ih, weight_hh, bias_ih, bias_hh, weight_ch) per (layer, direction), in Keras
    order (None where absent)."""
    if isinstance(module, RNN):
        module = module.cell
    if isinstance(module, (LSTMCell, LSTM)):
        if getattr(module, "proj_size", 0):
            raise ValueError("Keras' LSTM has no projection: an LSTM with proj_size > 0 has "
                             "no Keras weights")
        return [(w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_ch,
                 None if w.ln_ih is None else (w.ln_ih, w.ln_hh, w.ln_c, w.ln_bc))
                for w in module.layer_weights()]
    raise TypeError(f"expected a torchlstm LSTM, LSTMCell or RNN, got {type(module).__name__}")


def get(module: nn.Module) -> list[np.ndarray]:
    """The module's weights as Keras arrays: [kernel, recurrent_kernel, bias] per layer and
    direction (no bias entry when the module has no biases; then the three peephole
    arrays with peephole=True)."""
    out = []
    for w_ih, w_hh, b_ih, b_hh, w_ch, ln in _groups(module):
        out += [w_ih.detach().cpu().numpy().T.copy(), w_hh.detach().cpu().numpy().T.copy()]
        if b_ih is not None:
            out.append((b_ih + b_hh).detach().cpu().numpy())
        if w_ch is not None:
            out += [p.detach().cpu().numpy().copy() for p in w_ch.chunk(3)]
        if ln is not None:
            out += [p.detach().cpu().numpy().copy() for p in ln]
    return out


def set(module: nn.Module, arrays: Sequence[np.ndarray]) -> None:  # noqa: A001
    """Copy Keras arrays (as from ``keras_layer.get_weights()``) into the module."""
    groups = _groups(module)
    has_bias, peep = groups[0][2] is not None, groups[0][4] is not None
    has_ln = groups[0][5] is not None
    per = 2 + has_bias + 3 * peep + 4 * has_ln
    arrays = list(arrays)
    if len(arrays) != per * len(groups):
        raise ValueError(f"expected {per * len(groups)} Keras arrays ({len(groups)} x "
                         f"[kernel, recurrent_kernel{', bias' if has_bias else ''}"
                         f"{', 3 peephole weights' if peep else ''}"
                         f"{', 4 layer-norm weights' if has_ln else ''}]), got {len(arrays)}")
    with torch.no_grad():
        for k, (w_ih, w_hh, b_ih, b_hh, w_ch, ln) in enumerate(groups):
            a = [torch.as_tensor(np.asarray(x)) for x in arrays[per * k: per * (k + 1)]]
            for name, src, dst in (("kernel", a[0].t(), w_ih), ("recurrent_kernel", a[1].t(), w_hh)):
                if tuple(src.shape) != tuple(dst.shape):
                    raise ValueError(f"Keras {name} #{k}: expected shape "
                                     f"{tuple(dst.t().shape)}, got {tuple(a[0 if name == 'kernel' else 1].shape)}")
                dst.copy_(src)
            if has_bias:
                if tuple(a[2].shape) != tuple(b_ih.shape):
                    raise ValueError(f"Keras bias #{k}: expected shape {tuple(b_ih.shape)}, got "
                                     f"{tuple(a[2].shape)}")
                b_ih.copy_(a[2])
                b_hh.zero_()
            if peep:
                H = w_ch.shape[0] // 3
                for q, name in enumerate(("input", "forget", "output")):
                    p = a[2 + has_bias + q]
                    if tuple(p.shape) != (H,):
                        raise ValueError(f"Keras {name}_gate_peephole_weights #{k}: expected "
                                         f"shape ({H},), got {tuple(p.shape)}")
                    w_ch[q * H:(q + 1) * H] = p
            if has_ln:
                first = 2 + has_bias + 3 * peep
                for q, (name, dst) in enumerate(zip(("ln_weight_ih", "ln_weight_hh",
                                                     "ln_weight_c", "ln_bias_c"), ln)):
                    p = a[first + q]
                    if tuple(p.shape) != tuple(dst.shape):
                        raise ValueError(f"Keras layer-norm weight {name} #{k}: expected shape "
                                         f"{tuple(dst.shape)}, got {tuple(p.shape)}")
                    dst.copy_(p)


def load_h5(module: nn.Module, path: str, layers: Union[str, Iterable[str], None] = None) -> None:
    """Load weights from a ``.weights.h5`` file written by Keras 3 (``model.save_weights``).

    layers: the file's group of each Keras layer to take, in order (e.g. ``"layers/lstm"``,
    or ``["layers/lstm", "layers/lstm_1"]`` for two stacked ones; a Bidirectional layer's
    group holds both directions). Default: every LSTM cell in the file."""
    try:
        import h5py
    except ImportError as e:  # h5py comes with keras; torchlstm itself does not need it
        raise ImportError("reading Keras .weights.h5 files needs h5py (pip install h5py)") from e
    if isinstance(layers, str):
        layers = [layers]
    with h5py.File(path, "r") as f:
        cells: list[str] = []  # groups holding one LSTM cell's vars: .../cell/vars
        f.visititems(lambda name, obj: cells.append(name)
                     if isinstance(obj, h5py.Group) and name.endswith("cell/vars") else None)

        def layer_of(cell: str) -> str:  # "layers/bidirectional/forward_layer/cell/vars"
            base = cell[: -len("/cell/vars")]
            for d in ("/forward_layer", "/backward_layer"):
                base = base[: -len(d)] if base.endswith(d) else base
            return base

        if layers is None:  # every LSTM layer, in creation order: lstm, lstm_1, lstm_2, ...
            def natural(name: str):
                stem, _, num = name.rpartition("_")
                return (stem, int(num)) if num.isdigit() else (name, -1)
            layers = sorted({layer_of(c) for c in cells}, key=natural)
        arrays = []
        for layer in layers:
            mine = [c for c in cells if layer_of(c) == layer.rstrip("/")]
            if not mine:
                raise ValueError(f"no Keras LSTM weights under {layer!r} in {path}; LSTM "
                                 f"layers there: {sorted({layer_of(c) for c in cells})}")
            for c in sorted(mine, key=lambda c: "backward_layer" in c):  # forward first
                g = f[c]
                arrays += [np.asarray(g[k]) for k in sorted(g.keys(), key=int)]
    set(module, arrays)
