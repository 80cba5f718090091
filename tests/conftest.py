import contextlib
import os

# Inductor's on-disk caches key on the graph, not on this extension's fake kernels: a
# stale entry from an earlier build would be reused. Tests always compile afresh.
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import pytest
import torch

import torchlstm


def tolerances(dtype):
    """(rtol, atol) against a float64-exact reference computed in the same dtype."""
    return {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 2e-5)}[dtype]


def assert_close(actual, expected, dtype, msg=""):
    rtol, atol = tolerances(dtype)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{msg}: {m}")


def assert_same_lstm(expected, actual, x, **call):
    """Two LSTM modules with the same weights give the same output, states and gradients
    (of x and every parameter) on x, in float64."""
    (o1, (h1, c1)), (o2, (h2, c2)) = expected(x, **call), actual(x, **call)
    for a, e in ((o2, o1), (h2, h1), (c2, c1)):
        assert_close(a, e, torch.float64)
    g1 = torch.autograd.grad(o1.pow(2).sum() + c1.sum(), [x] + list(expected.parameters()))
    g2 = torch.autograd.grad(o2.pow(2).sum() + c2.sum(), [x] + list(actual.parameters()))
    for a, e in zip(g2, g1):
        assert_close(a, e, torch.float64)


@contextlib.contextmanager
def cpu_avx512(allowed):
    """The CPU kernels' AVX-512 parts allowed or not inside the block (the tests run both
    versions on a machine that has AVX-512); the previous setting restored after."""
    before = torchlstm._C.set_cpu_avx512(allowed)
    try:
        yield
    finally:
        torchlstm._C.set_cpu_avx512(before)


def randn(*shape, dtype=torch.float64, requires_grad=False, scale=1.0):
    t = torch.randn(*shape, dtype=dtype) * scale
    return t.requires_grad_(requires_grad)


def twin_lstms(seed=0, **kwargs):
    """nn.LSTM and torchlstm.LSTM built under the same seed: identical weights by init."""
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(**kwargs)
    torch.manual_seed(seed)
    ours = torchlstm.LSTM(**kwargs)
    return ref, ours


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
