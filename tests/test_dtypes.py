"""Dtypes other than float32/float64: float16/bfloat16 on the CPU (computed in float32),
complex (nn.LSTM runs it on the CPU; so does torchlstm, on its reference loop), and CPU
autocast."""
import pytest
import torch

import torchlstm
from support import op_args

ops = torch.ops.torchlstm


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cpu_matches_float64(dtype):
    """float16/bfloat16 on the CPU: computed in float32, results in the input's dtype,
    within the dtype's rounding of the float64 answer; cell states saved in float32."""
    torch.manual_seed(0)
    ref = torchlstm.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4,
                         dtype=torch.float64)
    m = torchlstm.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4)
    m.load_state_dict(ref.state_dict())
    m = m.to(dtype)
    x64 = torch.randn(10, 3, 8, dtype=torch.float64, requires_grad=True)
    x = x64.detach().to(dtype).requires_grad_()
    (o, (h, c)), (o64, (h64, c64)) = m(x), ref(x64)
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    for a, e in ((o, o64), (h, h64), (c, c64)):
        assert a.dtype == dtype
        assert ((a.double() - e).norm() / e.norm()).item() < tol
    g = torch.autograd.grad((o.float() * 1.5).sum() + c.float().sum(), [x, *m.parameters()])
    g64 = torch.autograd.grad((o64 * 1.5).sum() + c64.sum(), [x64, *ref.parameters()])
    for a, e in zip(g, g64):
        assert a.dtype == dtype
        assert ((a.double() - e).norm() / e.norm()).item() < 2 * tol
    args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in op_args()]
    out, h_n, c_n, gates, cs = ops.layer_forward(*args)
    assert out.dtype == gates.dtype == dtype and cs.dtype == torch.float32
    torch.library.opcheck(ops.layer_forward, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    cell = torchlstm.LSTMCell(8, 16).to(dtype)
    h1, c1 = cell(x[0])
    assert h1.dtype == dtype and torch.autograd.grad(h1.float().sum(), x)[0].dtype == dtype


@pytest.mark.parametrize("bidirectional", [False, True])
def test_complex_runs_like_nn(bidirectional):
    """complex64/complex128: nn.LSTM runs them on the CPU, and so does torchlstm (the
    kernels are real-valued: complex inputs take the reference loop, with autograd)."""
    for dtype in (torch.complex64, torch.complex128):
        torch.manual_seed(0)
        ref = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=bidirectional).to(dtype)
        ours = torchlstm.LSTM(3, 5, num_layers=2, bidirectional=bidirectional).to(dtype)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(4, 2, 3, dtype=dtype, requires_grad=True)
        (o1, (h1, c1)), (o2, (h2, c2)) = ref(x), ours(x)
        for a, e in ((o2, o1), (h2, h1), (c2, c1)):
            torch.testing.assert_close(a, e)
        g1 = torch.autograd.grad(o1.abs().sum(), [x, *ref.parameters()])
        g2 = torch.autograd.grad(o2.abs().sum(), [x, *ours.parameters()])
        for a, e in zip(g2, g1):
            torch.testing.assert_close(a, e)
        cell = torchlstm.LSTMCell(3, 5).to(dtype)
        assert cell(x[0])[0].dtype == dtype


def test_cpu_autocast_keeps_float32():
    """torch.autocast on the CPU leaves torchlstm in its parameters' dtype (the CUDA
    autocast casts to the autocast dtype, as cuDNN's nn.LSTM: tests/test_cuda.py)."""
    m = torchlstm.LSTM(3, 4, num_layers=2)
    cell = torchlstm.LSTMCell(3, 4)
    x = torch.randn(5, 2, 3)
    expected, (h, c) = m(x)
    expected_cell = cell(x[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h2, c2) = m(x)
        out_cell = cell(x[0])
    assert out.dtype == torch.float32
    assert torch.equal(out, expected) and torch.equal(h2, h) and torch.equal(c2, c)
    assert torch.equal(out_cell[0], expected_cell[0])
