"""The pair ops (csrc/ops.h): both directions of a bidirectional layer in one call, which
the CPU runs at once on two threads (team.h's DirectionRun). Each result equals what the
two single-direction ops give, run one after the other or at once (forced either way by
torchlstm._C.set_cpu_directions, so both paths run on any machine), for every option;
opcheck and gradcheck on the ops; errors; and what the modules run and export."""
import pytest
import torch

import torchlstm
from support import cpu_setting, randn, regularizers
from torchlstm import _C, activations

ops = torch.ops.torchlstm
# big enough for a team of two per direction when they run one after the other
T, B, I, H = 9, 8, 16, 64
MODES = ["sequential", "concurrent"]
CASES = ["plain", "proj_mask", "regularizers", "peephole", "layer_norm", "no_bias"]


def directions(setting):
    return cpu_setting(_C.set_cpu_directions, setting)


def single_args(case, reverse, dtype, requires_grad=True, T=T, B=B, I=I, H=H, mask=None):
    """layer_forward's arguments for one direction of `case` (all of them, in order)."""
    rg = dict(dtype=dtype, requires_grad=requires_grad)
    Hout = 24 if case == "proj_mask" else H
    bias = case != "no_bias"
    reg = (regularizers(T=T, B=B, I=I, H=H, Hout=Hout, dtype=dtype) if case == "regularizers"
           else (None,) * 4)
    w_ch = randn(3 * H, scale=0.5, **rg) if case == "peephole" else None
    ln = ((1 + 0.1 * randn(4 * H, dtype=dtype)).requires_grad_(requires_grad),
          (1 + 0.1 * randn(4 * H, dtype=dtype)).requires_grad_(requires_grad),
          (1 + 0.1 * randn(H, dtype=dtype)).requires_grad_(requires_grad),
          randn(H, scale=0.1, **rg)) if case == "layer_norm" else (None,) * 4
    return (randn(B, Hout, **rg), randn(B, H, **rg), randn(4 * H, I, scale=0.3, **rg),
            randn(4 * H, Hout, scale=0.3, **rg), randn(4 * H, **rg) if bias else None,
            randn(4 * H, **rg) if bias else None,
            randn(Hout, H, scale=0.3, **rg) if case == "proj_mask" else None, mask, reverse,
            activations.resolve("tanh"), activations.resolve("sigmoid"), *reg, w_ch, *ln,
            1e-5)


def case_args(case, dtype, requires_grad=True, **sizes):
    """(x, forward-direction args, reverse-direction args) of layer_forward."""
    Ts, Bs = sizes.get("T", T), sizes.get("B", B)
    x = randn(Ts, Bs, sizes.get("I", I), dtype=dtype, requires_grad=requires_grad)
    mask = None
    if case == "proj_mask":
        mask = torch.rand(Ts, Bs) > 0.3
        mask[:, 0] = True
    f = single_args(case, False, dtype, requires_grad, mask=mask, **sizes)
    r = single_args(case, True, dtype, requires_grad, mask=mask, **sizes)
    return x, f, r


def pair_args(x, f, r):
    """layer_pair_forward's arguments from the two directions' layer_forward ones."""
    lists = [[a, b] for a, b in zip(f, r)]
    return (x, *lists[:7], f[7], f[9], f[10], *lists[11:20], f[20])


def run_singles(x, f, r, need_grad):
    op = ops.layer_forward if need_grad else ops.layer_inference
    return [op(x, *f) for f in (f, r)]


def backward_args(grads, x, f, r, out, gates, cs):
    """layer_pair_backward's arguments (grads: grad_output (T,B,2Hout), h_n, c_n)."""
    L = lambda i: [f[i], r[i]]  # noqa: E731
    return (*grads, x, L(0), L(1), L(2), L(3), L(6), f[7], out, gates, cs, f[9], f[10],
            *(L(i) for i in range(11, 20)), f[20], L(4), L(5))


def close(a, e, dtype):
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(a, e, **tol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pair_equals_the_two_single_ops(mode, case, dtype):
    """Forward, inference and backward of the pair = each direction's single op (run as
    they run without the pair: one after the other, each with the whole team)."""
    x, f, r = case_args(case, dtype, requires_grad=False)
    with directions(mode):
        out, h_n, c_n, gates, cs = ops.layer_pair_forward(*pair_args(x, f, r))
        inf = ops.layer_pair_inference(*pair_args(x, f, r))
    singles = run_singles(x, f, r, True)
    close(out, torch.cat([s[0] for s in singles], 2), dtype)
    close(h_n, torch.stack([s[1] for s in singles]), dtype)
    close(c_n, torch.stack([s[2] for s in singles]), dtype)
    for d in (0, 1):
        close(gates[d], singles[d][3], dtype)
        close(cs[d], singles[d][4], dtype)
    for a, e in zip(inf, (out, h_n, c_n)):
        close(a, e, dtype)

    grads = (randn(*out.shape, dtype=dtype), randn(*h_n.shape, dtype=dtype),
             randn(*c_n.shape, dtype=dtype))
    with directions(mode):
        got = ops.layer_pair_backward(*backward_args(grads, x, f, r, out, gates, cs))
    Hout = out.shape[2] // 2
    want = []
    for d, a in enumerate((f, r)):
        s = singles[d]
        want.append(ops.layer_backward(
            grads[0].narrow(2, d * Hout, Hout), grads[1][d], grads[2][d], x, a[0], a[1], a[2],
            a[3], a[6], a[7], s[0], s[3], s[4], a[8], a[9], a[10], *a[11:21], a[4], a[5]))
    close(got[0], want[0][0] + want[1][0], dtype)  # d_input: both directions' summed
    for i in range(1, 9):
        for d in (0, 1):
            close(got[i][d], want[d][i], dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["plain", "proj_mask", "layer_norm"])
def test_opcheck_pair_ops(mode, case):
    x, f, r = case_args(case, torch.float32, T=4, B=3, I=5, H=8)
    with directions(mode):
        torch.library.opcheck(ops.layer_pair_forward, pair_args(x, f, r))
        with torch.no_grad():
            out, h_n, c_n, gates, cs = ops.layer_pair_forward(*pair_args(x, f, r))
        plain = lambda a: tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in a)  # noqa: E731
        x0, f0, r0 = x.detach(), plain(f), plain(r)
        torch.library.opcheck(ops.layer_pair_inference, pair_args(x0, f0, r0),
                              test_utils=("test_schema", "test_faketensor",
                                          "test_aot_dispatch_static"))
        grads = (torch.randn(out.shape), torch.randn(h_n.shape), torch.randn(c_n.shape))
        torch.library.opcheck(ops.layer_pair_backward,
                              backward_args(grads, x0, f0, r0, out, gates, cs))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["proj_mask", "peephole", "layer_norm"])
def test_gradcheck_pair(mode, case):
    """The pair's autograd (the lists in and out, d_input summed) against finite
    differences; and twice (create_graph, the reference loop's path) by gradgradcheck."""
    x, f, r = case_args(case, torch.float64, T=3, B=2, I=3, H=4)
    args = pair_args(x, f, r)
    leaves = [x] + [t for a in args[1:] if isinstance(a, list) for t in a
                    if isinstance(t, torch.Tensor) and t.requires_grad]

    def fn(*inputs):
        it = iter(inputs[1:])
        rebuilt = [inputs[0]] + [
            [next(it) if isinstance(t, torch.Tensor) and t.requires_grad else t for t in a]
            if isinstance(a, list) else a for a in args[1:]]
        out, h, c, _, _ = ops.layer_pair_forward(*rebuilt)
        return out, h, c

    with directions(mode):
        assert torch.autograd.gradcheck(fn, leaves)
        if case != "layer_norm":  # (layer norm's second derivative: test_layer_norm.py)
            assert torch.autograd.gradgradcheck(fn, leaves)


def test_bad_lists_are_named():
    x, f, r = case_args("plain", torch.float32, requires_grad=False)
    args = list(pair_args(x, f, r))
    three = list(args)
    three[3] = [f[2], r[2], r[2]]
    with pytest.raises(RuntimeError, match=r"layer_pair_inference.*w_ih must be a list of 2"):
        ops.layer_pair_inference(*three)
    with pytest.raises(TypeError, match=r"w_ih must be a list of 2"):
        ops.layer_pair_inference(*(a.to("meta") if isinstance(a, torch.Tensor) else
                                   [t.to("meta") for t in a] if isinstance(a, list) and
                                   all(isinstance(t, torch.Tensor) for t in a) else a
                                   for a in three))
    half = list(args)
    half[5] = [f[4], None]
    with pytest.raises(RuntimeError, match=r"b_ih must be two tensors or two None"):
        ops.layer_pair_forward(*half)
    _, f2, r2 = case_args("plain", torch.float32, requires_grad=False, H=32)
    mixed = pair_args(x, f, r2)
    with pytest.raises(RuntimeError, match=r"same hidden size"):
        ops.layer_pair_forward(*mixed)
    bad = list(args)
    bad[3] = [f[2], r[2][:, :3]]
    with pytest.raises(ValueError, match=r"reverse direction\): w_ih must have shape"):
        ops.layer_pair_forward(*bad)
    with pytest.raises(ValueError, match="'auto', 'sequential', 'concurrent'"):
        _C.set_cpu_directions("parallel")


@pytest.mark.parametrize("mode", MODES + ["auto"])
def test_module_both_ways_equal(mode):
    """A 2-layer bidirectional module (dropout, zoneout, projection) in float64: the same
    outputs and gradients whichever way the directions run, = nn.LSTM where it has it."""
    torch.manual_seed(0)
    m = torchlstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=24).double()
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=24).double()
    ref.load_state_dict(m.state_dict())
    x = randn(T, B, I, requires_grad=True)
    with directions(mode):
        out, (h, c) = m(x)
        grads = torch.autograd.grad((out.sum() + h.sum() + 2 * c.sum()), [x, *m.parameters()])
        with torch.inference_mode():  # the worker thread runs in the caller's mode
            out_inf, _ = m(x.detach())
    ro, (rh, rc) = ref(x)
    rgrads = torch.autograd.grad((ro.sum() + rh.sum() + 2 * rc.sum()), [x, *ref.parameters()])
    for a, e in zip((out, h, c, out_inf, *grads), (ro, rh, rc, ro, *rgrads)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    assert out_inf.is_inference()


def test_module_calls_the_pair_and_exports_the_single_ops():
    """Eager and torch.compile run ONE pair op per bidirectional layer; torch.export (and
    so the ONNX exporter) and torch.jit.trace record the per-direction ops."""
    m = torchlstm.LSTM(I, 16, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, I)
    called = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "torchlstm":
                called.append(func._opname)
            return func(*args, **(kwargs or {}))

    with Spy():
        m(x)
    assert called == ["layer_pair_forward"] * 2
    ep = torch.export.export(m, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "torchlstm.layer_forward.default" in targets
    assert not any("pair" in t for t in targets)
    torch.testing.assert_close(ep.module()(x)[0], m(x)[0])
    traced = torch.jit.trace(m, (x,), check_trace=False)
    assert "layer_pair" not in str(traced.graph)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x)[0], m(x)[0])


@pytest.mark.parametrize("case", ["plain", "proj_mask", "layer_norm"])
def test_cuda_code_pair_equals_its_single_ops(cuda, case):
    """The CUDA backend's pair ops (the directions one after the other on its stream) =
    its own single ops, forward and backward; on a GPU or the CPU emulation."""
    x, f, r = case_args(case, torch.float64, requires_grad=False, T=5, B=3, I=6, H=8)
    x, f, r = cuda.to((x,))[0], cuda.to(f), cuda.to(r)
    out, h_n, c_n, gates, cs = cuda.ops.layer_pair_forward(*pair_args(x, f, r))
    singles = [cuda.ops.layer_forward(x, *a) for a in (f, r)]
    close(out, torch.cat([s[0] for s in singles], 2), torch.float64)
    close(h_n, torch.stack([s[1] for s in singles]), torch.float64)
    inf = cuda.ops.layer_pair_inference(*pair_args(x, f, r))
    close(inf[0], out, torch.float64)
    grads = tuple(torch.randn(t.shape, dtype=torch.float64, device=t.device)
                  for t in (out, h_n, c_n))
    got = cuda.ops.layer_pair_backward(*backward_args(grads, x, f, r, out, gates, cs))
    Hout = out.shape[2] // 2
    for d, a in enumerate((f, r)):
        s = singles[d]
        want = cuda.ops.layer_backward(
            grads[0].narrow(2, d * Hout, Hout), grads[1][d], grads[2][d], x, a[0], a[1], a[2],
            a[3], a[6], a[7], s[0], s[3], s[4], a[8], a[9], a[10], *a[11:21], a[4], a[5])
        if d == 0:
            d_input = want[0]
        else:
            close(got[0], d_input + want[0], torch.float64)
        for i in range(1, 9):
            close(got[i][d], want[i], torch.float64)
