"""torch.jit.trace and AOTInductor (issue 14): traced / AOT-compiled torchlstm models give
eager's results on new inputs, and load in a fresh process that imported torchlstm."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import torchlstm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fresh_process(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stdout


class Model(torch.nn.Module):
    """Several torchlstm layers: LSTM (2 layers, bidirectional, projection), a Keras-style
    LSTM, and an LSTMCell."""

    def __init__(self):
        super().__init__()
        self.a = torchlstm.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=4,
                                batch_first=True)
        self.b = torchlstm.LSTM(8, 5, batch_first=True, activation="gelu",
                                recurrent_activation="hard_sigmoid", zoneout=0.2,
                                return_sequences=True)
        self.cell = torchlstm.LSTMCell(5, 4)

    def forward(self, x):
        y, (h, c) = self.a(x)
        y = self.b(y)
        h2, c2 = self.cell(y[:, -1])
        return y, h, c, h2 + c2


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_trace_new_inputs_and_save_load(grad, tmp_path):
    """Traced with or without grad mode (the tracer's check re-runs under no_grad): equal to
    eager on new batch / time sizes; jit.save + jit.load in a fresh process."""
    torch.manual_seed(0)
    m = Model().double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(m, (x,))
    x2 = torch.randn(4, 7, 3, dtype=torch.float64)
    with torch.no_grad():
        ref = m(x2)
        got = traced(x2)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-12, rtol=1e-12)
    path = str(tmp_path / "traced.pt")
    torch.jit.save(traced, path)
    torch.save({"x": x2, "ref": ref}, str(tmp_path / "io.pt"))
    out = fresh_process(f"""
        import torch, torchlstm
        m = torch.jit.load({path!r})
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            got = m(io["x"])
        for g, r in zip(got, io["ref"]):
            torch.testing.assert_close(g, r, atol=1e-12, rtol=1e-12)
        print("ok")
    """)
    assert "ok" in out


def test_traced_module_trains():
    """A module traced with grad mode on runs layer_forward: gradients as eager's."""
    torch.manual_seed(0)
    m = Model().double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    traced = torch.jit.trace(m.eval(), (x,))
    sum(o.sum() for o in traced(x)).backward()
    got = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    sum(o.sum() for o in m(x)).backward()
    for g, p in zip(got, m.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-10, rtol=1e-10)


def test_aoti_compile_and_package_fresh_process(tmp_path):
    """torch.export + AOTInductor: the package, loaded in a fresh process, equals eager at
    a batch / time size other than the example's (dynamic shapes)."""
    torch.manual_seed(0)
    m = Model().eval()
    x = torch.randn(2, 5, 3)
    B, T = torch.export.Dim("batch", min=2, max=32), torch.export.Dim("time", min=2, max=32)
    with torch.no_grad():
        ep = torch.export.export(m, (x,), dynamic_shapes=({0: B, 1: T},))
        path = torch._inductor.aoti_compile_and_package(
            ep, package_path=str(tmp_path / "m.pt2"))
        x2 = torch.randn(3, 7, 3)
        ref = m(x2)
    torch.save({"x": x2, "ref": ref}, str(tmp_path / "io.pt"))
    out = fresh_process(f"""
        import torch, torchlstm
        m = torch._inductor.aoti_load_package({path!r})
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            got = m(io["x"])
        for g, r in zip(got, io["ref"]):
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
        print("ok")
    """)
    assert "ok" in out
