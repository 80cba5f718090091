"""ONNX export of the torchlstm ops (torch.onnx.export(..., dynamo=True)).

``torch.ops.torchlstm.layer_forward`` / ``layer_inference`` are translated to standard
ONNX, with the semantics of torchlstm/_reference.py:

* the ONNX ``LSTM`` operator where it expresses the call exactly: float32 (onnxruntime's
  LSTM kernel has no float64 / float16), no projection, no mask, no Keras dropout /
  zoneout, and both activations among ONNX LSTM's own (``ONNX_LSTM_ACTIVATIONS``). Gates reordered from torch's i, f, g, o to ONNX's
  i, o, f, c; B = [b_ih, b_hh]; direction forward / reverse; initial_h / initial_c.
* otherwise a ``Scan`` over time (the input projection x W_ih^T + b computed for all
  steps before it): projection (w_hr), every fused activation, the Keras dropout masks,
  zoneout (its eval blend), and masks of any pattern (holes included).
* peephole connections (w_ch = [p_i, p_f, p_o]): the ONNX LSTM's P input (ONNX orders it
  i, o, f) on the first path, three element-wise terms in the Scan's body on the second.
* layer normalisation (ln_w_ih, ln_w_hh, ln_w_c, ln_b_c): the Scan, with ONNX's
  LayerNormalization (opset 17) on x W_ih^T (all steps at once, before the Scan), on
  h W_hh^T and on c~ in its body.

Masks (and PackedSequence, which the module runs as a mask) always take the Scan: the
ONNX LSTM's sequence_lens only describes right-padded masks, which is a property of the
mask's values, not of the graph, and the ONNX LSTM zeroes padded outputs where
torchlstm carries h over.

The translations register themselves with the exporter's default registry when torch's
ONNX exporter is first imported (an import hook, so ``import torchlstm`` does not import
onnxscript), so a plain ``torch.onnx.export(model, args, dynamo=True)`` works after
``import torchlstm``. ``translation_table()`` gives the same functions for
``custom_translation_table=`` (the exporter's public argument), should a torch release
change the registry this relies on.

The TorchScript exporter (dynamo=False) gets a symbolic that raises an error naming
dynamo=True.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import itertools
import sys

import torch

from . import activations

# name -> (ONNX LSTM activation, alpha, beta); alpha / beta None where the ONNX function
# takes none. Keras 3's hard_sigmoid is relu6(x + 3) / 6 = HardSigmoid(1/6, 0.5);
# sparse_sigmoid clip(0.5 (x + 1), 0, 1) = HardSigmoid(0.5, 0.5); celu (alpha 1) = elu.
ONNX_LSTM_ACTIVATIONS = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "sparse_sigmoid": ("HardSigmoid", 0.5, 0.5),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "elu": ("Elu", 1.0, None),
    "celu": ("Elu", 1.0, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
}

_counter = itertools.count()


# --------------------------------------------------------------------------- graph building
class _Builder:
    """Appends ONNX nodes to a list (the exporter's tracer, or a Scan body's)."""

    def __init__(self, nodes: list, version: int, prefix: str | None = None):
        self.nodes = nodes
        self.version = version
        self.prefix = prefix  # names every output (subgraph values must be named)

    def __call__(self, op_type: str, *inputs, _n: int = 1, **attrs):
        import onnx_ir as ir
        inputs = list(inputs)
        while inputs and inputs[-1] is None:
            inputs.pop()
        attributes = ir.convenience.convert_attributes(
            {k: v for k, v in attrs.items() if v is not None})
        node = ir.Node("", op_type, inputs, attributes=attributes, num_outputs=_n,
                       version=self.version)
        if self.prefix is not None:
            for out in node.outputs:
                out.name = f"{self.prefix}_{next(_counter)}"
        self.nodes.append(node)
        return node.outputs[0] if _n == 1 else tuple(node.outputs)

    def const(self, value, dtype):
        """A constant of ir.DataType dtype."""
        import numpy as np
        import onnx_ir as ir
        return self("Constant", value=ir.tensor(np.asarray(value, dtype=dtype.numpy())))

    def ints(self, values):
        import numpy as np
        import onnx_ir as ir
        return self("Constant", value=ir.tensor(np.asarray(values, dtype=np.int64)))


def _activation(g: _Builder, name: str, x, dtype):
    """act(x) in plain ONNX ops (Keras 3's definitions, as csrc/gate_math.h), all of which
    onnxruntime's CPU kernels run in float32 and float64 (it has no float64 HardSigmoid,
    Elu, Selu, Softsign, Softplus, LeakyRelu, Erf: formulas instead; gelu's Erf runs in
    float32 for float64 inputs, about 1e-7 relative)."""
    import onnx_ir as ir
    c = lambda v: g.const(v, dtype)  # noqa: E731

    def clip(v, lo, hi):
        return g("Min", g("Max", v, c(lo)), c(hi))

    def relu(v):
        return g("Max", v, c(0.0))

    def softplus(v):  # max(v, 0) + log(1 + exp(-|v|)): no overflow
        return g("Add", relu(v), g("Log", g("Add", c(1.0), g("Exp", g("Neg", g("Abs", v))))))

    def hard_sigmoid(v):  # relu6(v + 3) / 6
        return clip(g("Div", g("Add", v, c(3.0)), c(6.0)), 0.0, 1.0)

    def elu(v):  # alpha = 1; exp(v) - 1 where v <= 0
        return g("Where", g("Greater", v, c(0.0)), v, g("Sub", g("Exp", v), c(1.0)))

    if name == "tanh":
        return g("Tanh", x)
    if name == "sigmoid":
        return g("Sigmoid", x)
    if name == "hard_sigmoid":
        return hard_sigmoid(x)
    if name == "relu":
        return relu(x)
    if name == "linear":
        return x
    if name == "relu6":
        return clip(x, 0.0, 6.0)
    if name in ("elu", "celu"):  # celu with alpha 1 is elu
        return elu(x)
    if name == "selu":
        alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
        neg = g("Mul", c(alpha), g("Sub", g("Exp", x), c(1.0)))
        return g("Mul", c(scale), g("Where", g("Greater", x, c(0.0)), x, neg))
    if name == "gelu":  # exact: 0.5 x (1 + erf(x / sqrt 2))
        u = g("Mul", x, c(0.70710678118654752440))
        if dtype != ir.DataType.FLOAT:
            erf = g("Cast", g("Erf", g("Cast", u, to=ir.DataType.FLOAT)), to=dtype)
        else:
            erf = g("Erf", u)
        return g("Mul", g("Mul", c(0.5), x), g("Add", c(1.0), erf))
    if name == "silu":
        return g("Mul", x, g("Sigmoid", x))
    if name == "hard_silu":
        return g("Mul", x, hard_sigmoid(x))
    if name == "softplus":
        return softplus(x)
    if name == "softsign":
        return g("Div", x, g("Add", c(1.0), g("Abs", x)))
    if name == "exponential":
        return g("Exp", x)
    if name == "leaky_relu":
        return g("Add", relu(x), g("Mul", c(0.2), g("Min", x, c(0.0))))
    if name == "mish":
        return g("Mul", x, g("Tanh", softplus(x)))
    if name == "log_sigmoid":
        return g("Neg", softplus(g("Neg", x)))
    if name == "hard_tanh":
        return clip(x, -1.0, 1.0)
    if name == "sparse_plus":  # u = clip(x, -1, 1) + 1; u^2 / 4 + max(x - 1, 0)
        u = g("Add", clip(x, -1.0, 1.0), c(1.0))
        return g("Add", g("Mul", g("Mul", u, u), c(0.25)), relu(g("Sub", x, c(1.0))))
    if name == "sparse_sigmoid":
        return clip(g("Mul", c(0.5), g("Add", x, c(1.0))), 0.0, 1.0)
    if name == "squareplus":
        return g("Mul", c(0.5), g("Add", x, g("Sqrt", g("Add", g("Mul", x, x), c(4.0)))))
    if name == "tanh_shrink":
        return g("Sub", x, g("Tanh", x))
    if name == "soft_shrink":
        return g("Sub", x, clip(x, -0.5, 0.5))
    if name == "hard_shrink":
        return g("Where", g("Greater", g("Abs", x), c(0.5)), x, c(0.0))
    raise NotImplementedError(f"torchlstm ONNX export: no ONNX form for activation {name!r}")


def _static(dim, what: str) -> int:
    if not isinstance(dim, int):
        raise NotImplementedError(f"torchlstm ONNX export: {what} must be static, got {dim!r}")
    return dim


def _reorder_iofc(g: _Builder, t, H: int):
    """Rows (or entries) of a 4H tensor from torch's i, f, g, o to ONNX's i, o, f, c
    (Slices, which the exporter's optimizer folds into the weights)."""
    def rows(k):
        return g("Slice", t, g.ints([k * H]), g.ints([(k + 1) * H]), g.ints([0]))
    return g("Concat", rows(0), rows(3), rows(1), rows(2), axis=0)


def _onnx_lstm(g: _Builder, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, act, ract, H,
               w_ch=None):
    zero = g.ints([0])
    P = None
    if w_ch is not None:  # ours i, f, o -> ONNX's i, o, f
        def part(k):
            return g("Slice", w_ch, g.ints([k * H]), g.ints([(k + 1) * H]), g.ints([0]))
        P = g("Unsqueeze", g("Concat", part(0), part(2), part(1), axis=0), zero)
    W = g("Unsqueeze", _reorder_iofc(g, w_ih, H), zero)
    R = g("Unsqueeze", _reorder_iofc(g, w_hh, H), zero)
    B = None
    if b_ih is not None or b_hh is not None:
        bi = b_ih if b_ih is not None else g("Mul", b_hh, g.const(0.0, b_hh.dtype))
        bh = b_hh if b_hh is not None else g("Mul", b_ih, g.const(0.0, b_ih.dtype))
        B = g("Unsqueeze", g("Concat", _reorder_iofc(g, bi, H), _reorder_iofc(g, bh, H),
                             axis=0), zero)
    names, alphas, betas = [], [], []
    for n in (ract, act, act):  # f (the gates), g (the candidate), h (the output)
        onnx_name, alpha, beta = ONNX_LSTM_ACTIVATIONS[n]
        names.append(onnx_name)
        if alpha is not None:
            alphas.append(alpha)
        if beta is not None:
            betas.append(beta)
    Y, Y_h, Y_c = g("LSTM", x, W, R, B, None, g("Unsqueeze", h0, zero),
                    g("Unsqueeze", c0, zero), P, _n=3, hidden_size=H,
                    direction="reverse" if reverse else "forward", activations=names,
                    activation_alpha=alphas or None, activation_beta=betas or None)
    return (g("Squeeze", Y, g.ints([1])), g("Squeeze", Y_h, zero), g("Squeeze", Y_c, zero))


def _scan_lstm(g: _Builder, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse, act,
               ract, ik, rk, zh, zc, H, Hout, w_ch=None, ln=None, eps=1e-5):
    """ln: (ln_w_ih, ln_w_hh, ln_w_c, ln_b_c) or None."""
    import onnx_ir as ir
    dtype = x.dtype

    def layer_norm(builder, v, scale, shift=None):  # over the last axis
        args = (v, scale) if shift is None else (v, scale, shift)
        return builder("LayerNormalization", *args, axis=-1, epsilon=float(eps))
    if ik is not None:
        x = g("Mul", x, ik)
    xw = g("MatMul", x, g("Transpose", w_ih, perm=[1, 0]))  # (T, B, 4H)
    if ln is not None:
        xw = layer_norm(g, xw, ln[0])
    for b in (b_ih, b_hh):
        if b is not None:
            xw = g("Add", xw, b)
    w_hh_t = g("Transpose", w_hh, perm=[1, 0])
    w_hr_t = g("Transpose", w_hr, perm=[1, 0]) if w_hr is not None else None

    tag = f"torchlstm_scan{next(_counter)}"
    body_nodes: list = []
    b = _Builder(body_nodes, g.version, prefix=tag)

    def value(name, elem_dtype):
        return ir.Value(name=f"{tag}_{name}", type=ir.TensorType(elem_dtype))

    h_in, c_in, xw_t = value("h", dtype), value("c", dtype), value("xw_t", dtype)
    scans = [xw]
    body_inputs = [h_in, c_in, xw_t]
    extra = {}
    for name, t, dt in (("mask", mask, ir.DataType.BOOL), ("zh", zh, dtype), ("zc", zc, dtype)):
        if t is not None:
            extra[name] = value(name + "_t", dt)
            scans.append(t)
            body_inputs.append(extra[name])

    h_rec = b("Mul", h_in, rk) if rk is not None else h_in
    hw = b("MatMul", h_rec, w_hh_t)
    a = b("Add", xw_t, hw if ln is None else layer_norm(b, hw, ln[1]))
    i, f, gg, o = b("Split", a, axis=1, num_outputs=4, _n=4)
    if w_ch is not None:  # peepholes: i and f see c_{t-1}, o the carried c_t
        p_i, p_f, p_o = g("Split", w_ch, axis=0, num_outputs=3, _n=3)
        i = b("Add", i, b("Mul", p_i, c_in))
        f = b("Add", f, b("Mul", p_f, c_in))
    c_tilde = b("Add", b("Mul", _activation(b, ract, f, dtype), c_in),
                b("Mul", _activation(b, ract, i, dtype), _activation(b, act, gg, dtype)))
    one = b.const(1.0, dtype)
    c_new = c_tilde
    if "zc" in extra:  # z = 1 keeps the old value
        z = extra["zc"]
        c_new = b("Add", b("Mul", z, c_in), b("Mul", b("Sub", one, z), c_tilde))
    if w_ch is not None:
        o = b("Add", o, b("Mul", p_o, c_new))
    c_h = c_tilde if ln is None else layer_norm(b, c_tilde, ln[2], ln[3])
    h_new = b("Mul", _activation(b, ract, o, dtype), _activation(b, act, c_h, dtype))
    if w_hr_t is not None:
        h_new = b("MatMul", h_new, w_hr_t)
    if "zh" in extra:
        z = extra["zh"]
        h_new = b("Add", b("Mul", z, h_in), b("Mul", b("Sub", one, z), h_new))
    if "mask" in extra:
        m = b("Unsqueeze", extra["mask"], b.ints([1]))
        h_new = b("Where", m, h_new, h_in)
        c_new = b("Where", m, c_new, c_in)
    h_out = b("Identity", h_new)  # the scan output (a graph output once, a state once)
    body = ir.Graph(body_inputs, [h_new, c_new, h_out], nodes=body_nodes, name=tag)
    d = 1 if reverse else 0
    h_n, c_n, out = g("Scan", h0, c0, *scans, _n=3, body=body, num_scan_inputs=len(scans),
                      scan_input_directions=[d] * len(scans), scan_output_directions=[d])
    return out, h_n, c_n


def _translate(n_outputs, input, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None,
               mask=None, reverse=False, activation=0, recurrent_activation=1,
               input_keep=None, recurrent_keep=None, zoneout_h=None, zoneout_c=None, w_ch=None,
               ln_w_ih=None, ln_w_hh=None, ln_w_c=None, ln_b_c=None, layer_norm_eps=1e-5):
    import onnx_ir as ir
    from torch.onnx._internal.exporter import _core
    tracer = _core.current_tracer
    g = _Builder(tracer.nodes, tracer.opset.version)
    for name, t in (("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh)):
        if t is None:
            raise TypeError(f"torchlstm ONNX export: {name} must be a tensor, got None")
    H = _static(w_ih.shape[0], "w_ih.shape[0]") // 4
    Hout = _static(w_hr.shape[0], "w_hr.shape[0]") if w_hr is not None else H
    act, ract = activations.name_of(activation), activations.name_of(recurrent_activation)
    ln = (ln_w_ih, ln_w_hh, ln_w_c, ln_b_c) if ln_w_ih is not None else None
    plain = (w_hr is None and mask is None and ln is None and all(
        t is None for t in (input_keep, recurrent_keep, zoneout_h, zoneout_c))
        and act in ONNX_LSTM_ACTIVATIONS and ract in ONNX_LSTM_ACTIVATIONS
        and input.dtype == ir.DataType.FLOAT)  # onnxruntime's LSTM: float32 only
    if plain:
        out, h_n, c_n = _onnx_lstm(g, input, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, act,
                                   ract, H, w_ch)
    else:
        out, h_n, c_n = _scan_lstm(g, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask,
                                   reverse, act, ract, input_keep, recurrent_keep, zoneout_h,
                                   zoneout_c, H, Hout, w_ch, ln, layer_norm_eps)
    if n_outputs == 3:
        return out, h_n, c_n
    # layer_forward's gates (T,B,4H; 9H+3 with layer norm) and cs (T,B,H) only feed
    # backward, which an exported (inference) graph has not: zeros of their shapes, which
    # the optimizer drops.
    tb = g("Slice", g("Shape", input), g.ints([0]), g.ints([2]))
    zero = g.const([0.0], input.dtype)
    width = 9 * H + 3 if ln is not None else 4 * H
    gates = g("Expand", zero, g("Concat", tb, g.ints([width]), axis=0))
    import onnx_ir as ir
    cs_dtype = (ir.DataType.FLOAT if input.dtype in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
                else input.dtype)  # the kernels keep cell states in float32 for half inputs
    cs = g("Expand", g.const([0.0], cs_dtype), g("Concat", tb, g.ints([H]), axis=0))
    return out, h_n, c_n, gates, cs


def layer_forward(*args, **kwargs):
    """ONNX translation of torch.ops.torchlstm.layer_forward (5 outputs)."""
    return _translate(5, *args, **kwargs)


def layer_inference(*args, **kwargs):
    """ONNX translation of torch.ops.torchlstm.layer_inference (3 outputs)."""
    return _translate(3, *args, **kwargs)


def translation_table() -> dict:
    """{op overload: translation} for torch.onnx.export(custom_translation_table=...)."""
    return {torch.ops.torchlstm.layer_forward.default: layer_forward,
            torch.ops.torchlstm.layer_inference.default: layer_inference}


# --------------------------------------------------------------------------- registration
_REGISTRY_MODULE = "torch.onnx._internal.exporter._torchlib._torchlib_registry"
_REGISTRATION_MODULE = "torch.onnx._internal.exporter._registration"
_registered = False


def _register_with_torchlib() -> None:
    """Adds the translations to the list ONNXRegistry.from_torchlib() reads on every export
    (the default registry of torch.onnx.export(dynamo=True)). The two modules import each
    other: this runs after each, and registers once both are complete."""
    global _registered
    mod, reg = sys.modules.get(_REGISTRY_MODULE), sys.modules.get(_REGISTRATION_MODULE)
    if _registered or not hasattr(mod, "_registry") or not hasattr(reg, "OnnxDecompMeta"):
        return
    for target, fn in translation_table().items():
        mod._registry.append(reg.OnnxDecompMeta(
            onnx_function=fn, fx_target=target, signature=None, is_custom=False,
            skip_signature_inference=True))
    _registered = True


_TORCHSCRIPT_MODULE = "torch.onnx._internal.torchscript_exporter.utils"


def _register_torchscript_symbolics() -> None:
    """The TorchScript exporter (dynamo=False): a symbolic that names dynamo=True."""
    register = sys.modules[_TORCHSCRIPT_MODULE].register_custom_op_symbolic
    for name in ("layer_forward", "layer_inference"):
        register(f"torchlstm::{name}", _torchscript_symbolic, 9)


def _torchscript_symbolic(g, *args):
    raise RuntimeError(
        "torchlstm: the TorchScript ONNX exporter (torch.onnx.export(..., dynamo=False)) "
        "cannot export torchlstm's LSTM / LSTMCell / RNN; use torch.onnx.export(model, args, "
        "dynamo=True) (the default), which emits the ONNX LSTM operator or a Scan")


# module -> what to run once it is imported
_HOOKS = {_REGISTRY_MODULE: _register_with_torchlib,
          _REGISTRATION_MODULE: _register_with_torchlib,
          _TORCHSCRIPT_MODULE: _register_torchscript_symbolics}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs _HOOKS[name] once the module ``name`` has been imported (so that importing
    torchlstm imports neither torch.onnx nor onnxscript)."""

    def __init__(self):
        self.pending = set()

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending:
            return None
        self.pending.discard(fullname)
        if not self.pending:
            sys.meta_path.remove(self)
        spec = _find_spec_without(self, fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                _run_hook(fullname)

        spec.loader = _Loader()
        return spec


def _find_spec_without(finder, fullname):
    """The spec the other finders give (this finder taken off sys.meta_path meanwhile)."""
    present = finder in sys.meta_path
    if present:
        sys.meta_path.remove(finder)
    try:
        for f in sys.meta_path:
            spec = f.find_spec(fullname, sys.modules[fullname.rpartition(".")[0]].__path__)
            if spec is not None:
                return spec
        return None
    finally:
        if present:
            sys.meta_path.insert(0, finder)


def _run_hook(name: str) -> None:
    try:
        _HOOKS[name]()
    except Exception as e:  # never break torch.onnx itself
        import warnings
        warnings.warn(f"torchlstm: could not register its ONNX translations ({e!r}); pass "
                      "custom_translation_table=torchlstm.onnx_translation_table() to "
                      "torch.onnx.export", RuntimeWarning)


_finder = _AfterImport()


def install() -> None:
    """Called by ``import torchlstm``: registers now what torch.onnx has already imported,
    the rest when it is imported."""
    for name in _HOOKS:
        if name != _TORCHSCRIPT_MODULE and importlib.util.find_spec("onnxscript") is None:
            continue  # no dynamo exporter without onnxscript
        if name in sys.modules:
            _run_hook(name)
        else:
            _finder.pending.add(name)
    if _finder.pending and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
