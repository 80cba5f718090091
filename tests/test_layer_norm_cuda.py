"""Layer normalisation (layer_norm=True) in the CUDA kernels: the GEMM path's row kernels
and step kernels (csrc/cuda/layer_norm_kernels.cuh) and backward, run where the `cuda`
fixture says (a GPU, or the CPU emulation of the device: csrc/cuda_emu), against the CPU
op (torch.ops.torchlstm, csrc/cpu/layer_norm_loops.h) and the float64 reference loop
(torchlstm._reference.layer_forward): outputs, states, the saved rows and every gradient
(through the op's autograd), over a grid of options, float64 and float32, sizes that
leave a block's threads partly idle or strided over a row; the persistent path declines
layer normalisation (a forced one is an error naming it); opcheck.

torch.empty is NaN-filled (the fixture), so an element a kernel forgets to write shows."""
import copy
import itertools

import pytest
import torch

import torchlstm
from torchlstm import _reference, activations
from support import random_mask, regularizers, rel_err

F64 = torch.float64
cpu_ops = torch.ops.torchlstm
LN_IDX = slice(17, 21)  # ln_w_ih, ln_w_hh, ln_w_c, ln_b_c in the op's arguments


def ln_op_args(T=5, B=3, I=4, H=6, proj=False, bias=True, masked=False, reverse=False,
               peephole=False, which="", eval_z=False, eps=1e-5, act="tanh", ract="sigmoid",
               scale=1.0, seed=0):
    """layer_forward's arguments with layer normalisation, float64, the floating ones
    requiring grad (the regularisers' masks and z do not)."""
    g = torch.Generator().manual_seed(seed)
    Hout = 3 if proj else H

    def r(*s, k=1.0, base=0.0):
        return (base + k * torch.randn(*s, generator=g, dtype=F64)).requires_grad_()
    reg = regularizers(T=T, B=B, I=I, H=H, Hout=Hout, which=which, eval_z=eval_z) if which \
        else (None,) * 4
    return [r(T, B, I), r(B, Hout), r(B, H), r(4 * H, I, k=0.5 * scale),
            r(4 * H, Hout, k=0.5 * scale), r(4 * H) if bias else None,
            r(4 * H) if bias else None, r(Hout, H, k=0.5) if proj else None,
            random_mask(T, B) if masked else None, reverse, activations.resolve(act),
            activations.resolve(ract), *reg, r(3 * H) if peephole else None,
            r(4 * H, k=0.3, base=1.0), r(4 * H, k=0.3, base=1.0), r(H, k=0.3, base=1.0),
            r(H, k=0.3), eps]


def differentiable(args):
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def weighted(outs):
    gen = torch.Generator().manual_seed(7)
    return sum((t * torch.randn(t.shape, generator=gen, dtype=F64).to(t)).sum() for t in outs)


def run_op(ops, args):
    """layer_forward's five outputs and the gradients of a weighted sum of (out, h_n, c_n)
    with respect to every differentiable argument."""
    outs = ops.layer_forward(*args)
    return outs, torch.autograd.grad(weighted(outs[:3]), differentiable(args))


def reference(args):
    """The float64 reference loop's (out, h_n, c_n) and gradients, same arguments."""
    a = [t.detach().double().cpu().requires_grad_(t.requires_grad)
         if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in args]
    (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse, act, ract, ik, rk, zh, zc, w_ch,
     g_ih, g_hh, g_c, b_c, eps) = a
    mask = None if mask is None else mask.cpu()
    outs = _reference.layer_forward(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask=mask, reverse=reverse,
        act=activations.as_function(act), ract=activations.as_function(ract), input_keep=ik,
        recurrent_keep=rk, zoneout_h=zh, zoneout_c=zc, w_ch=w_ch, ln_ih=g_ih, ln_hh=g_hh,
        ln_c=g_c, ln_bc=b_c, layer_norm_eps=eps)
    return outs, torch.autograd.grad(weighted(outs), differentiable(a))


def assert_close(got, want, tol, what):
    assert len(got) == len(want), what
    for k, (a, e) in enumerate(zip(got, want)):
        assert a.shape == e.shape, f"{what} {k}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        err = rel_err(a, e)
        assert err < tol, f"{what} {k}: relative error {err}"


GRID = list(itertools.product([False, True], [True, False], [False, True], [False, True],
                              [False, True]))


@pytest.mark.parametrize("proj,bias,masked,reverse,peephole", GRID)
@pytest.mark.parametrize("which,eval_z", [("", False), ("iorc", False), ("oc", True)])
def test_matches_cpu_op_float64(cuda, proj, bias, masked, reverse, peephole, which, eval_z):
    """The CUDA code = the CPU op in float64: out, h_n, c_n, the saved rows (gates, cs)
    and every gradient (x, h0, c0, weights, biases, projection, peepholes, LN's four)."""
    args = ln_op_args(proj=proj, bias=bias, masked=masked, reverse=reverse, peephole=peephole,
                      which=which, eval_z=eval_z)
    want, g_want = run_op(cpu_ops, args)
    cuda.set_path("auto")
    got, g_got = run_op(cuda.ops, cuda.to(args))
    assert cuda.last_path() == "gemm"
    for name, a, e in zip(["out", "h_n", "c_n", "gates", "cs"], got, want):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert rel_err(a, e) < 1e-12, name  # saved rows of masked steps: zero on both
    assert_close(g_got, g_want, 1e-11, "grad")


@pytest.mark.parametrize("case", [dict(), dict(proj=True, masked=True, reverse=True),
                                  dict(peephole=True, which="iorc"),
                                  dict(proj=True, peephole=True, which="oc", eval_z=True,
                                       bias=False)],
                         ids=["plain", "proj-mask-reverse", "peephole-dropout-zoneout",
                              "proj-peephole-eval-zoneout-nobias"])
@pytest.mark.parametrize("H", [5, 37, 300], ids=["H5", "H37", "H300"])
def test_matches_reference_loop(cuda, case, H):
    """= the float64 reference loop. H = 5 and 37: one warp, most threads (of 64) idle
    or partly; H = 300: 256 threads strided over a row (4H = 1200: the row kernels too)."""
    T, B = (4, 2) if H == 300 else (6, 3)
    args = ln_op_args(T=T, B=B, H=H, scale=0.3 if H == 300 else 1.0, **case)
    want, g_want = reference(args)
    got, g_got = run_op(cuda.ops, cuda.to(args))
    assert_close(got[:3], want, 1e-12, "forward")
    assert_close(g_got, g_want, 1e-10, "grad")


@pytest.mark.parametrize("case", [dict(), dict(proj=True, masked=True, reverse=True,
                                               peephole=True, which="iorc")],
                         ids=["plain", "everything"])
def test_float32_against_float64(cuda, case):
    """float32 (float accumulators, float saved rows) against the float64 reference."""
    args = ln_op_args(T=6, B=4, H=37, **case)
    want, g_want = reference(args)
    got, g_got = run_op(cuda.ops, cuda.to(args, torch.float32))
    assert got[0].dtype == torch.float32 and got[3].dtype == torch.float32
    assert_close(got[:3], want, 2e-5, "forward")
    assert_close(g_got, g_want, 2e-4, "grad")


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 6e-2), (torch.float16, 1e-2)])
def test_half_precision_against_float64(cuda, dtype, tol):
    """bfloat16 / float16 storage, float32 accumulators and cell states (as the plain
    kernels): outputs and gradients near float64's."""
    args = ln_op_args(T=4, B=3, H=16, peephole=True, seed=3)
    low = cuda.to(args, dtype)
    want, g_want = reference([t.detach().to(dtype).double().requires_grad_(t.requires_grad)
                              if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                              for t in args])
    got, g_got = run_op(cuda.ops, low)
    assert got[0].dtype == dtype and got[4].dtype == torch.float32
    assert_close(got[:3], want, tol, "forward")
    assert_close(g_got, g_want, 10 * tol, "grad")


@pytest.mark.parametrize("act,ract", [("relu", "hard_sigmoid"), ("softsign", "sigmoid"),
                                      ("elu", "hard_silu"), ("linear", "sigmoid")])
def test_activations_match_cpu(cuda, act, ract):
    args = ln_op_args(act=act, ract=ract, peephole=True, which="oc")
    want, g_want = run_op(cpu_ops, args)
    got, g_got = run_op(cuda.ops, cuda.to(args))
    assert_close(got, want, 1e-12, "forward")
    assert_close(g_got, g_want, 1e-11, "grad")


def test_inference_and_eps(cuda):
    """layer_inference (x^_ih normalised in place, nothing saved) = layer_forward's first
    three; layer_norm_eps reaches all three norms (a large one, against the CPU)."""
    args = [a.detach() if isinstance(a, torch.Tensor) else a
            for a in ln_op_args(masked=True, peephole=True, which="iorc", eps=0.5)]
    dev = cuda.to(args)
    inf = cuda.ops.layer_inference(*dev)
    fwd = cuda.ops.layer_forward(*dev)
    for a, e in zip(inf, fwd[:3]):
        assert torch.equal(a, e)
    assert_close(inf, cpu_ops.layer_inference(*args), 1e-12, "eps=0.5")
    small = list(args)
    small[-1] = 1e-5
    assert rel_err(inf[0], cpu_ops.layer_inference(*small)[0]) > 1e-3


def test_empty_sequence_and_batch(cuda):
    for T, B in [(0, 3), (4, 0)]:
        args = ln_op_args(T=T, B=B)
        want, g_want = run_op(cpu_ops, args)
        got, g_got = run_op(cuda.ops, cuda.to(args))
        for a, e in zip(list(got) + list(g_got), list(want) + list(g_want)):
            assert a.shape == e.shape
            torch.testing.assert_close(a.cpu(), e, rtol=0, atol=1e-12)


def test_persistent_path_declines_layer_norm(cuda):
    """Automatic: the GEMM path (the persistent kernel has no layer normalisation) even
    where the plain cell would take the persistent one; forced: an error naming it."""
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in ln_op_args(T=8, B=2)]
    dev = cuda.to(args)
    plain = list(dev)
    plain[LN_IDX] = [None] * 4
    cuda.set_path("auto")
    cuda.ops.layer_forward(*plain)
    assert cuda.last_path() == "persistent"  # these sizes do take it without LN
    cuda.ops.layer_forward(*dev)
    assert cuda.last_path() == "gemm"
    cuda.set_path("persistent")
    with pytest.raises(RuntimeError, match="persistent forward path was forced but does not "
                                           "apply here: layer normalisation"):
        cuda.ops.layer_forward(*dev)


def test_plan_names_layer_norm():
    from torchlstm import _C
    p = _C.persistent_plan(2, 8, False, 4, 4, 132, 227 * 1024, 1024, layer_norm=True)
    assert not p["ok"] and "layer normalisation" in p["why"]
    assert _C.persistent_plan(2, 8, False, 4, 4, 132, 227 * 1024, 1024)["ok"]


def test_opcheck(cuda):
    """Schema, fake kernel (the saved width 9H+3) and autograd registration of the CUDA
    code's ops with layer-norm arguments, gradients included."""
    args = cuda.to(ln_op_args(T=3, B=2, I=3, H=4, peephole=True, masked=True))
    torch.library.opcheck(cuda.ops.layer_forward, args)
    torch.library.opcheck(cuda.ops.layer_inference,
                          [a.detach() if isinstance(a, torch.Tensor) else a for a in args])


def test_gradcheck(cuda):
    """gradcheck through the CUDA code's layer_forward, the LN parameters included."""
    args = cuda.to(ln_op_args(T=3, B=2, I=2, H=3, proj=True, peephole=True, masked=True,
                              which="oc", eval_z=True, reverse=True))
    idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def f(*ts):
        a = list(args)
        for i, t in zip(idx, ts):
            a[i] = t
        return cuda.ops.layer_forward(*a)[:3]
    assert torch.autograd.gradcheck(f, [args[i] for i in idx])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="modules on a CUDA GPU")
@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True, "proj_size": 2,
                                     "peephole": True}],
                         ids=["plain", "stacked-bidirectional-proj-peephole"])
def test_module_on_gpu_matches_cpu(kw):
    """torchlstm.LSTM(layer_norm=True) on a GPU = on the CPU (float64): outputs, states,
    every parameter's gradient (whichever way run_layer routes CUDA layer norm)."""
    torch.manual_seed(9)
    m = torchlstm.LSTM(3, 5, layer_norm=True, **kw).double()
    with torch.no_grad():
        for n, q in m.named_parameters():
            if n.startswith("ln_"):
                q.add_(0.3 * torch.randn_like(q))
    g = copy.deepcopy(m).cuda()
    x = torch.randn(6, 4, 3, dtype=F64)
    want = m(x)
    got = g(x.cuda())
    outs_w = [want[0], *want[1]]
    outs_g = [got[0], *got[1]]
    assert_close(outs_g, outs_w, 1e-12, "forward")
    weighted(outs_w).backward()
    weighted(outs_g).backward()
    assert_close([q.grad for q in g.parameters()], [q.grad for q in m.parameters()], 1e-10,
                 "grad")
