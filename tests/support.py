"""What the test files share: tolerances, comparisons, random arguments of the layer
op, the cases they sweep, and the float64 reference loop (torchlstm._reference, with
activations by name). Imported by the test files; no test lives here."""
import contextlib
import itertools

import torch

import torchlstm
from torchlstm import _reference, activations

ops = torch.ops.torchlstm
I, H, P, T, B = 3, 4, 2, 5, 3


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
def cpu_setting(setter, value):
    """One of the CPU kernels' run-time switches (torchlstm._C.set_cpu_avx512,
    set_cpu_gemm, set_cpu_blas: each returns the previous value) set inside the block,
    so the tests run every path on whatever machine they get; restored after."""
    before = setter(value)
    try:
        yield
    finally:
        setter(before)


def cpu_avx512(allowed):
    """The CPU kernels' AVX-512 parts allowed or not inside the block."""
    return cpu_setting(torchlstm._C.set_cpu_avx512, allowed)


def run_onnxruntime(path, *inputs):
    """The outputs of the ONNX file at path run by onnxruntime (CPU) on inputs, as tensors."""
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(s.get_inputs(), inputs)}
    assert len(feeds) == len(inputs)
    return [torch.from_numpy(o) for o in s.run(None, feeds)]


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


def layer_args(proj=False, bias=True, mask=None, reverse=False, act="tanh", ract="sigmoid",
               dtype=torch.float64, requires_grad=True, T=T, B=B, scale=1.0):
    """Random arguments of layer_forward. Lower `scale` keeps unbounded activations
    (relu, linear: c and h grow geometrically over time) in a range gradcheck can use."""
    Hout = P if proj else H
    rg = dict(dtype=dtype, requires_grad=requires_grad)
    return (randn(T, B, I, **rg), randn(B, Hout, scale=scale, **rg),
            randn(B, H, scale=scale, **rg), randn(4 * H, I, scale=0.5 * scale, **rg),
            randn(4 * H, Hout, scale=0.5 * scale, **rg),
            randn(4 * H, scale=scale, **rg) if bias else None,
            randn(4 * H, scale=scale, **rg) if bias else None,
            randn(Hout, H, scale=0.5, **rg) if proj else None, mask, reverse,
            activations.resolve(act), activations.resolve(ract))


def random_mask(T=T, B=B):
    m = torch.rand(T, B) > 0.4
    m[:, 0] = True          # one row always valid
    m[:, -1] = False        # one row never valid
    m[2:, 1] = False        # right padding on another
    return m


CASES = list(itertools.product([False, True], [False, True], [False, True], [False, True]))

BOUNDED = {"tanh", "sigmoid", "hard_sigmoid", "softsign", "hard_tanh", "sparse_sigmoid"}


def regularizers(T=T, B=B, I=I, H=H, Hout=H, dtype=torch.float64, which="iorc", eval_z=False):
    """(input_keep, recurrent_keep, zoneout_h, zoneout_c) for the op: scaled 0/(1/(1-p))
    dropout masks with holes, z in {0, 1} (training) or an expanded rate (eval);
    `which` picks i(nput), r(ecurrent), o (zoneout h), c (zoneout c)."""
    def keep(shape, p):
        m = (torch.rand(shape) >= p).to(dtype) / (1 - p)
        m.view(-1)[0] = 0  # at least one hole, one kept
        m.view(-1)[-1] = 1 / (1 - p)
        return m

    def zone(shape, rate):
        if eval_z:
            return torch.full((1, 1, 1), rate, dtype=dtype).expand(shape)
        z = (torch.rand(shape) < rate).to(dtype)
        z.view(-1)[0], z.view(-1)[-1] = 1, 0
        return z
    return (keep((B, I), 0.3) if "i" in which else None,
            keep((B, Hout), 0.4) if "r" in which else None,
            zone((T, B, Hout), 0.3) if "o" in which else None,
            zone((T, B, H), 0.4) if "c" in which else None)


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, mask=None,
               reverse=False, activation="tanh", recurrent_activation="sigmoid", **regularizers):
    """The reference loop with activations by name: x (T,B,I) -> (output, h_n, c_n), the
    torchlstm.layer_forward contract (see torchlstm/_reference.py)."""
    return _reference.layer_forward(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse,
        activations.reference(activation), activations.reference(recurrent_activation),
        **regularizers)


def op_args(**override):
    T, B, I, H = 4, 3, 5, 6
    a = dict(input=torch.randn(T, B, I), h0=torch.randn(B, H), c0=torch.randn(B, H),
             w_ih=torch.randn(4 * H, I), w_hh=torch.randn(4 * H, H), b_ih=torch.randn(4 * H),
             b_hh=torch.randn(4 * H), w_hr=None, mask=None, reverse=False, activation=0,
             recurrent_activation=1)
    a.update(override)
    return list(a.values())


# ----------------------------------------------------------- the CUDA tests' helpers
def rel_err(actual, expected):
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.isfinite(a).all(), "non-finite values (an unwritten output?)"
    return ((a - e).norm() / e.norm().clamp_min(1e-300)).item()


def to_device(args, device, dtype=None):
    """Tensor arguments copied to device (and floating ones to dtype), keeping which
    require grad; other arguments as they are."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            t = a.detach().to(device)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out.append(t.requires_grad_(a.requires_grad and t.is_floating_point()))
        else:
            out.append(a)
    return out


def forward_and_grads(op_ns, args, seed=0):
    """layer_forward, then the gradients of a random projection of (out, h_n, c_n)."""
    out, h, c, gates, cs = op_ns.layer_forward(*args)
    gen = torch.Generator().manual_seed(seed)
    w = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for t in (out, h, c)]
    loss = (out * w[0]).sum() + (h * w[1]).sum() + (c * w[2]).sum()
    wrt = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return (out, h, c, gates, cs), torch.autograd.grad(loss, wrt)


def mask_for(T, B):
    """A (T, B) mask with right padding, holes and (B > 1) a row that never runs."""
    m = torch.rand(T, B) > 0.3
    m[0] = True
    if B > 1:
        m[:, -1] = False
        m[T // 2:, 0] = False
    return m
