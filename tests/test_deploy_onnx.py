"""ONNX export (issue 14): a plain torch.onnx.export(model, args, dynamo=True) of torchlstm
modules, run by onnxruntime at batch / time sizes other than the exported ones, equals
eager. The standard ONNX LSTM operator where it expresses the configuration, a Scan
otherwise (torchlstm/_onnx.py)."""
import subprocess
import sys
import textwrap

import pytest
import torch

import torchlstm
from torchlstm import activations

from support import run_onnxruntime

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

B, T = torch.export.Dim("batch", min=2, max=64), torch.export.Dim("time", min=2, max=64)


def export(model, args, dynamic_shapes, tmp_path, **kw):
    prog = torch.onnx.export(model, args, dynamo=True, dynamic_shapes=dynamic_shapes,
                             verbose=False, **kw)
    path = str(tmp_path / "m.onnx")
    prog.save(path)
    return path, [n.op_type for n in prog.model.graph]


def flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


def check(model, example, new, dynamic_shapes, tmp_path, dtype=torch.float32, expect=None,
          loose=()):
    """Exports model at example's sizes; onnxruntime at new's equals eager. loose: the
    outputs compared to 1e-6 in float64 (gelu: onnxruntime has no float64 Erf)."""
    model = model.to(dtype).eval()
    example = tuple(t.to(dtype) if t.is_floating_point() else t for t in example)
    new = tuple(t.to(dtype) if t.is_floating_point() else t for t in new)
    path, ops = export(model, example, dynamic_shapes, tmp_path)
    if expect is not None:
        assert expect in ops, ops
    with torch.no_grad():
        ref = flat(model(*new))
    got = run_onnxruntime(path, *new)
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        tol = 1e-5 if dtype == torch.float32 else 1e-6 if k in loose else 1e-10
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, atol=tol, rtol=tol, equal_nan=True, msg=f"output {k}")
    return ops


@pytest.mark.parametrize("kw", [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"batch_first": True, "bias": False},
    {"go_backwards": True, "return_sequences": True, "return_state": True,
     "batch_first": True},
    {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
    {"activation": "leaky_relu", "recurrent_activation": "sparse_sigmoid"},
    {"activation": "linear", "recurrent_activation": "hard_sigmoid"},
    {"activation": "elu", "recurrent_activation": "softsign"},
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_onnx_lstm_operator(kw, dtype, tmp_path):
    """Configurations the ONNX LSTM expresses export to it, with dynamic batch and time."""
    m = torchlstm.LSTM(3, 5, **kw)
    bt = (0, 1) if m.batch_first else (1, 0)
    dims = {bt[0]: B, bt[1]: T}
    shape = lambda b, t: (b, t, 3) if m.batch_first else (t, b, 3)  # noqa: E731
    ops = check(m, (torch.randn(*shape(2, 4)),), (torch.randn(*shape(5, 9)),), (dims,),
                tmp_path, dtype, expect="LSTM" if dtype == torch.float32 else "Scan")
    if dtype == torch.float32:  # onnxruntime's LSTM has no float64: the Scan there
        assert "Scan" not in ops


def test_onnx_initial_state(tmp_path):
    m = torchlstm.LSTM(3, 4, num_layers=2)
    dims = ({0: T, 1: B}, ({1: B}, {1: B}))
    ex = (torch.randn(4, 2, 3), (torch.randn(2, 2, 4), torch.randn(2, 2, 4)))
    new = (torch.randn(7, 5, 3), (torch.randn(2, 5, 4), torch.randn(2, 5, 4)))
    path, ops = export(m.eval(), ex, dims, tmp_path)
    assert "LSTM" in ops
    with torch.no_grad():
        ref = flat(m(*new))
    for g, r in zip(run_onnxruntime(path, new[0], *new[1]), ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


class Many(torch.nn.Module):
    """One LSTM per activation (as activation and as recurrent_activation)."""

    def __init__(self, **kw):
        super().__init__()
        self.names = activations.names()
        self.lstms = torch.nn.ModuleList(
            [torchlstm.LSTM(3, 4, activation=n, **kw) for n in self.names]
            + [torchlstm.LSTM(3, 4, recurrent_activation=n, **kw) for n in self.names])

    def forward(self, x):
        return tuple(m(x)[0] for m in self.lstms)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_onnx_every_activation(dtype, tmp_path):
    """Every fused activation (the ONNX LSTM's own and the Scan's) at new sizes."""
    with torch.no_grad():
        m = Many()
        for name, lstm in zip(m.names * 2, m.lstms):
            for p in lstm.parameters():  # exponential (exp of exp) stays finite
                p.mul_(0.1 if name == "exponential" else 0.5)
    n = len(m.names)
    gelu = [k for k in range(2 * n) if m.names[k % n] == "gelu"]
    ops = check(m, (torch.randn(4, 2, 3),), (torch.randn(6, 5, 3),), ({0: T, 1: B},),
                tmp_path, dtype, loose=gelu)
    assert "Scan" in ops and ("LSTM" in ops) == (dtype == torch.float32)


@pytest.mark.parametrize("kw", [
    {"proj_size": 2},
    {"proj_size": 2, "num_layers": 2, "bidirectional": True, "activation": "gelu"},
    {"zoneout": 0.3},
    {"zoneout": (0.2, 0.4), "bidirectional": True, "recurrent_activation": "hard_sigmoid"},
    {"activation": "mish", "batch_first": True, "num_layers": 2},
    {"input_dropout": 0.5, "recurrent_dropout": 0.5},  # eval: no dropout, the LSTM op
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_onnx_scan_options(kw, dtype, tmp_path):
    """Projection, zoneout's eval blend, activations ONNX LSTM lacks: the Scan."""
    m = torchlstm.LSTM(3, 4, **kw)
    if m.batch_first:
        ex, new, dims = torch.randn(2, 4, 3), torch.randn(5, 8, 3), {0: B, 1: T}
    else:
        ex, new, dims = torch.randn(4, 2, 3), torch.randn(8, 5, 3), {0: T, 1: B}
    check(m, (ex,), (new,), (dims,), tmp_path, dtype,
          expect="LSTM" if "input_dropout" in kw and dtype == torch.float32 else "Scan",
          loose=(0, 1, 2) if kw.get("activation") == "gelu" else ())


def holes_mask(b, t):
    g = torch.Generator().manual_seed(b * 100 + t)
    m = torch.rand(b, t, generator=g) > 0.35
    m[:, 0] = True
    return m


@pytest.mark.parametrize("kw", [
    {},
    {"bidirectional": True, "num_layers": 2},
    {"zero_output_for_mask": True, "return_sequences": True, "return_state": True},
    {"return_sequences": False, "proj_size": 2},
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_onnx_keras_mask(kw, tmp_path):
    """Keras masks with holes (and right padding): the Scan carries the state over."""
    m = torchlstm.LSTM(3, 4, batch_first=True, **kw).double()

    class WithMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x, mask):
            return self.m(x, mask=mask)

    padded = torch.arange(9)[None, :] < torch.tensor([9, 3, 7, 1, 5])[:, None]
    for mask in (holes_mask(5, 9), padded):
        check(WithMask(), (torch.randn(2, 4, 3), holes_mask(2, 4)),
              (torch.randn(5, 9, 3), mask), ({0: B, 1: T}, {0: B, 1: T}), tmp_path,
              torch.float64, expect="Scan")


def test_onnx_cell_and_rnn(tmp_path):
    """LSTMCell (one step, with and without hx) and RNN(LSTMCell) with a mask."""
    cell = torchlstm.LSTMCell(3, 4, activation="gelu")

    class Cell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x, h, c):
            return self.cell(x, (h, c))

    check(Cell(), (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)),
          (torch.randn(6, 3), torch.randn(6, 4), torch.randn(6, 4)),
          ({0: B}, {0: B}, {0: B}), tmp_path, expect="Scan")
    plain = torchlstm.LSTMCell(3, 4)
    check(plain, (torch.randn(2, 3),), (torch.randn(7, 3),), ({0: B},), tmp_path,
          expect="LSTM")

    rnn = torchlstm.RNN(torchlstm.LSTMCell(3, 4, zoneout=0.2), return_sequences=True,
                        return_state=True)

    class Rnn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, mask):
            return self.rnn(x, mask=mask)

    check(Rnn(), (torch.randn(2, 4, 3), holes_mask(2, 4)),
          (torch.randn(5, 9, 3), holes_mask(5, 9)), ({0: B, 1: T}, {0: B, 1: T}), tmp_path,
          expect="Scan")


def test_onnx_translation_table_explicit(tmp_path):
    """The same translations through the exporter's public custom_translation_table."""
    m = torchlstm.LSTM(3, 4, proj_size=2).eval()
    prog = torch.onnx.export(m, (torch.randn(4, 2, 3),), dynamo=True,
                             custom_translation_table=torchlstm.onnx_translation_table(),
                             dynamic_shapes=({0: T, 1: B},))
    path = str(tmp_path / "m.onnx")
    prog.save(path)
    x = torch.randn(6, 3, 3)
    with torch.no_grad():
        ref = flat(m(x))
    for g, r in zip(run_onnxruntime(path, x), ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_onnx_torchscript_exporter_names_dynamo(tmp_path):
    """dynamo=False: a clear error that names dynamo=True."""
    m = torchlstm.LSTM(3, 4).eval()
    with pytest.raises(Exception, match="dynamo=True"):
        torch.onnx.export(m, (torch.randn(4, 2, 3),), str(tmp_path / "m.onnx"), dynamo=False)


def test_import_torchlstm_imports_no_onnx():
    """import torchlstm loads neither torch.onnx's exporter nor onnxscript (the
    translations register when torch.onnx is first used)."""
    code = textwrap.dedent("""
        import sys, torchlstm
        bad = [m for m in sys.modules if m.startswith("onnxscript")
               or m.startswith("torch.onnx._internal.exporter")]
        assert not bad, bad
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
