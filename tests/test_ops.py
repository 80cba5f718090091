"""The ops themselves: gradcheck (float64), opcheck, masks and activations against the
plain-PyTorch reference, and the cell op against nn.LSTMCell's maths."""
import itertools

import pytest
import torch

import torchlstm
from torchlstm import activations
from support import BOUNDED, CASES, assert_close, cpu_avx512, layer_args, lstm_layer, randn, random_mask

ops = torch.ops.torchlstm
I, H, P, T, B = 3, 4, 2, 5, 3




@pytest.mark.parametrize("proj,bias,masked,reverse", CASES)
def test_layer_gradcheck(proj, bias, masked, reverse):
    args = layer_args(proj, bias, random_mask() if masked else None, reverse)

    def f(*a):
        out, h, c, _, _ = ops.layer_forward(*a)
        return out, h, c
    assert torch.autograd.gradcheck(f, args)


def test_cell_gradcheck():
    """LSTMCell is layer_forward over one step: gradcheck through the module."""
    x, h, c, w_ih, w_hh, b_ih, b_hh = layer_args()[:7]
    cell = torchlstm.LSTMCell(I, H, dtype=torch.float64)

    def f(x_t, h, c, *params):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return torch.func.functional_call(cell, dict(zip(names, params)), (x_t, (h, c)))
    assert torch.autograd.gradcheck(f, (x[0], h, c, w_ih, w_hh, b_ih, b_hh))


# every activation as the candidate/output one and as the gates' one, plus a few mixes
ACT_PAIRS = sorted({(a, "sigmoid") for a in activations.FUSED}
                   | {("tanh", r) for a in activations.FUSED for r in [a]}
                   | {("gelu", "hard_sigmoid"), ("mish", "softsign"), ("elu", "sparse_sigmoid")})


@pytest.mark.parametrize("act,ract", ACT_PAIRS)
def test_every_activation_vs_reference_and_gradcheck(act, ract):
    # unbounded activations grow c and h geometrically over time (exponential: doubly)
    scale = 1.0 if {act, ract} <= BOUNDED else 0.15 if "exponential" in (act, ract) else 0.4
    args = layer_args(proj=False, act=act, ract=ract, scale=scale)
    out, h, c, _, _ = ops.layer_forward(*args)
    e_out, e_h, e_c = lstm_layer(*args[:9], reverse=args[9], activation=act,
                                 recurrent_activation=ract)
    for a, e in ((out, e_out), (h, e_h), (c, e_c)):
        assert_close(a, e, torch.float64, f"{act}/{ract}")
    assert torch.autograd.gradcheck(lambda *a: ops.layer_forward(*a)[:3], args)


@pytest.mark.parametrize("name", sorted(activations.FUSED))
def test_every_activation_float32_simd_path(name):
    """The float32 SIMD lanes (8 per vector, fast exp) and the scalar tail agree with the
    float64 reference, over a range that crosses every kink and saturation."""
    H, B = 37, 4  # 37 units: four 8-lane vectors and a scalar tail
    x = torch.linspace(-7, 7, B * H, dtype=torch.float64).view(B, H)
    # One step whose candidate pre-activation is exactly x (h0 through an identity block of
    # W_hh), with i = 1 and f = 0 (saturated sigmoid biases) and c0 = 0: then c = act(x).
    w_ih = torch.zeros(4 * H, 1, dtype=torch.float64)
    w_hh = torch.zeros(4 * H, H, dtype=torch.float64)
    bias = torch.cat([torch.full((H,), 40.0), torch.full((H,), -40.0), torch.zeros(H),
                      torch.full((H,), 40.0)]).double()
    inp = torch.zeros(1, B, 1, dtype=torch.float64)
    w_hh[2 * H:3 * H] = torch.eye(H, dtype=torch.float64)
    want = activations.reference(name)(x)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        args = [t.to(dtype) for t in (inp, x, torch.zeros(B, H, dtype=torch.float64), w_ih, w_hh,
                                      bias, torch.zeros(4 * H, dtype=torch.float64))]
        _, _, c, _, _ = ops.layer_forward(*args, None, None, False, activations.resolve(name),
                                          activations.resolve("sigmoid"))
        torch.testing.assert_close(c.double(), want, rtol=tol,
                                   atol=tol * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("proj,reverse", list(itertools.product([False, True], [False, True])))
def test_mask_vs_reference(proj, reverse):
    mask = random_mask()
    args = layer_args(proj=proj, mask=mask, reverse=reverse)
    got = ops.layer_forward(*args)[:3]
    want = lstm_layer(*args[:9], reverse=reverse)
    g = [randn(*t.shape) for t in want]
    for a, e in zip(got, want):
        assert_close(a, e, torch.float64)
    grads_got = torch.autograd.grad(got, [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad], g)
    grads_want = torch.autograd.grad(want, [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad], g)
    for a, e in zip(grads_got, grads_want):
        assert_close(a, e, torch.float64)


def test_cell_vs_nn_lstmcell_maths():
    x, h, c, w_ih, w_hh, b_ih, b_hh = layer_args()[:7]
    cell = torchlstm.LSTMCell(I, H, dtype=torch.float64)
    with torch.no_grad():
        for p, v in zip(cell.parameters(), (w_ih, w_hh, b_ih, b_hh)):
            p.copy_(v)
    got = cell(x[0], (h, c))
    want = torch._VF.lstm_cell(x[0], (h, c), w_ih, w_hh, b_ih, b_hh)
    for a, e in zip(got, want):
        assert_close(a, e, torch.float64)


@pytest.mark.parametrize("proj,masked,reverse", [(False, False, False), (True, True, True)])
def test_opcheck_layer_ops(proj, masked, reverse):
    args = layer_args(proj=proj, mask=random_mask() if masked else None, reverse=reverse,
                      dtype=torch.float32)
    torch.library.opcheck(ops.layer_forward, args)
    with torch.no_grad():
        out, h, c, gates, cs = ops.layer_forward(*args)
    bw_args = (randn(*out.shape, dtype=torch.float32), randn(*h.shape, dtype=torch.float32),
               randn(*c.shape, dtype=torch.float32)) + tuple(
        a.detach() if isinstance(a, torch.Tensor) else a for a in args[:5]) + (
        args[7].detach() if proj else None, args[8], out, gates, cs, reverse, 0, 1)
    torch.library.opcheck(ops.layer_backward, bw_args)


def test_opcheck_one_step():
    """What LSTMCell runs: the layer ops over a sequence of one."""
    args = layer_args(dtype=torch.float32, T=1)
    torch.library.opcheck(ops.layer_forward, args)
    torch.library.opcheck(ops.layer_inference, tuple(
        a.detach() if isinstance(a, torch.Tensor) else a for a in args))


def test_backward_with_missing_grads():
    """Only h_n used: grad_output and grad_cn arrive as None (or zeros) — same answer."""
    args = layer_args()
    out, h, c, _, _ = ops.layer_forward(*args)
    wrt = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    g1 = torch.autograd.grad(h.sum(), wrt, retain_graph=True)
    g2 = torch.autograd.grad(h.sum() + 0 * out.sum() + 0 * c.sum(), wrt)
    for a, e in zip(g1, g2):
        assert_close(a, e, torch.float64)


def test_float32_float64_agree():
    args64 = layer_args(proj=True, requires_grad=False)
    args32 = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                   for a in args64)
    for a, e in zip(ops.layer_forward(*args32)[:3], ops.layer_forward(*args64)[:3]):
        torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("avx512", [True, False], ids=["avx512", "avx2"])
@pytest.mark.parametrize("B,H_", [(3, 16), (2, 40), (32, 256), (5, 130)])
@pytest.mark.parametrize("masked", [False, True])
def test_float32_gate_passes_vs_float64(avx512, B, H_, masked):
    """float32 forward and backward with the default activations, whose gate passes have
    AVX-512 versions (gates_avx512.cpp, where the CPU has AVX-512) beside the AVX2 ones:
    each against float64, outputs and every gradient. 40 and 130 units leave tails for
    the AVX2 loop; (32, 256) runs a team of two threads of 128 units each."""
    T_ = 6
    mask = None
    if masked:
        mask = torch.rand(T_, B) > 0.3
        mask[:, 0] = True
    args64 = (randn(T_, B, I), randn(B, H_), randn(B, H_), randn(4 * H_, I, scale=0.3),
              randn(4 * H_, H_, scale=0.3), randn(4 * H_), randn(4 * H_), None, mask, False,
              0, 1)
    args32 = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                   for a in args64)
    grads64 = (randn(T_, B, H_), randn(B, H_), randn(B, H_))
    grads32 = tuple(g.float() for g in grads64)

    def run(args, grads):
        out, h_n, c_n, gates, cs = ops.layer_forward(*args)
        back = ops.layer_backward(*grads, args[0], args[1], args[2], args[3], args[4], None,
                                  mask, out, gates, cs, False, 0, 1)
        return (out, h_n, c_n) + tuple(back[:6])

    with cpu_avx512(avx512):
        got = run(args32, grads32)
    for a, e in zip(got, run(args64, grads64)):  # (weight gradients sum T*B float32 terms)
        torch.testing.assert_close(a.double(), e, rtol=1e-4,
                                   atol=2e-5 + 2e-6 * e.abs().max().item())


@pytest.mark.parametrize("avx512", [True, False], ids=["avx512", "avx2"])
@pytest.mark.parametrize("B", [1, 2, 4])
@pytest.mark.parametrize("H_,proj", [(40, False), (130, False), (64, True)])
def test_small_batch_matvec_vs_float64(avx512, B, H_, proj):
    """Batches of 1-4 take blas.h's own matrix-vector loop for the recurrent (and
    projection) products, in float32 its AVX-512 version where the CPU has it, else the
    AVX2 one: both against the float64 op (BLAS). Column counts that are not multiples of
    8 or 16 (40, 130, 20) and a row count that is not a multiple of 8 (the projection's
    20) exercise the tails."""
    from torchlstm import _C
    Hout = 20 if proj else H_
    args64 = (randn(7, B, I), randn(B, Hout), randn(B, H_), randn(4 * H_, I, scale=0.3),
              randn(4 * H_, Hout, scale=0.3), randn(4 * H_), randn(4 * H_),
              randn(Hout, H_, scale=0.3) if proj else None, None, False, 0, 1)
    args32 = tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args64)
    with cpu_avx512(avx512):
        if not avx512:
            assert not _C.cpu_avx512()
        for a, e in zip(ops.layer_inference(*args32), ops.layer_forward(*args64)[:3]):
            torch.testing.assert_close(a.double(), e, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("proj,bias,masked,reverse", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("T,B,H_", [(5, 3, 4), (11, 32, 256), (9, 1, 40)])
def test_inference_op_equals_forward(proj, bias, masked, reverse, dtype, T, B, H_):
    """layer_inference (nothing saved, chunked input projection, c in place) computes what
    layer_forward computes; (11, 32, 256) spans several chunks, the last one shorter."""
    Hout = 24 if proj else H_
    mask = None
    if masked:
        mask = torch.rand(T, B) > 0.3
        mask[:, 0] = False
    args = (randn(T, B, I, dtype=dtype), randn(B, Hout, dtype=dtype), randn(B, H_, dtype=dtype),
            randn(4 * H_, I, dtype=dtype, scale=0.3), randn(4 * H_, Hout, dtype=dtype, scale=0.3),
            randn(4 * H_, dtype=dtype) if bias else None, randn(4 * H_, dtype=dtype) if bias else None,
            randn(Hout, H_, dtype=dtype, scale=0.3) if proj else None, mask, reverse, 0, 1)
    want = ops.layer_forward(*args)[:3]
    got = ops.layer_inference(*args)
    for a, e in zip(got, want):
        assert a.shape == e.shape
        assert_close(a, e, dtype)


def test_modules_use_inference_op_without_grad():
    m = torchlstm.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = randn(T, B, I)
    with torch.no_grad():
        o1, (h1, c1) = m(x)
    o2, (h2, c2) = m(x)  # parameters require grad: the training op
    assert o2.grad_fn is not None and o1.grad_fn is None
    for a, e in ((o1, o2), (h1, h2), (c1, c2)):
        assert_close(a, e.detach(), torch.float64)


def test_opcheck_inference_op():
    args = layer_args(proj=True, mask=random_mask(), reverse=True, dtype=torch.float32,
                      requires_grad=False)
    torch.library.opcheck(ops.layer_inference, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
