"""Cell variants (issue 16): peephole connections (``peephole=True``; Gers & Schmidhuber
2000, ONNX's LSTM with its P input):

    a_i += p_i c_{t-1},  a_f += p_f c_{t-1},  c~ = f c_{t-1} + i g,
    c_t = c~ (zoneout: z c_{t-1} + (1 - z) c~),  a_o += p_o c_t,  h~ = o act(c~)

Checked against a plain PyTorch step written here (the semantics), the reference loop
(torchlstm/_reference.py, which double backward recomputes with), onnxruntime's LSTM with
P, and between the CPU kernels (AVX-512 on/off, 1 and 2 threads), the CUDA code (its
emulation here; a GPU where there is one) and every module option; gradcheck, opcheck,
torch.compile, gradgradcheck, ONNX export, state_dict and Keras weights."""
import itertools
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import torchlstm
from torchlstm import _reference, activations, keras_weights
from support import cpu_avx512, forward_and_grads, mask_for, random_mask, rel_err, run_onnxruntime

ops = torch.ops.torchlstm
F64 = torch.float64


# ------------------------------------------------------------------ helpers
def peephole_args(T=5, B=3, I=3, H=5, Hout=None, bias=True, mask=None, reverse=False,
                  act="tanh", ract="sigmoid", dtype=F64, scale=1.0, regs=(None,) * 4,
                  requires_grad=True):
    """Every argument of layer_forward with peepholes, by position (w_ch last)."""
    Hout = Hout or H
    rg = dict(dtype=dtype, requires_grad=requires_grad)

    def r(*s, k=1.0):
        return (torch.randn(*s, dtype=dtype) * k).requires_grad_(requires_grad)
    return [r(T, B, I), r(B, Hout, k=scale), r(B, H, k=scale), r(4 * H, I, k=0.5 * scale),
            r(4 * H, Hout, k=0.5 * scale), r(4 * H, k=scale) if bias else None,
            r(4 * H, k=scale) if bias else None,
            r(Hout, H, k=0.5) if Hout != H else None, mask, reverse,
            activations.resolve(act), activations.resolve(ract), *regs,
            torch.randn(3 * H, **rg)]


class Reference:
    """The reference loop behind layer_forward's argument order (a stand-in op namespace
    for support.forward_and_grads)."""

    @staticmethod
    def layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse, act, ract,
                      ik=None, rk=None, zh=None, zc=None, w_ch=None):
        fn = lambda i: activations.reference(activations.name_of(i))  # noqa: E731
        out, h, c = _reference.layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask,
                                             reverse, fn(act), fn(ract), ik, rk, zh, zc,
                                             w_ch=w_ch)
        return out, h, c, None, None


def regs(T, B, I, H, Hout, which, eval_z=False, dtype=F64):
    """(input_keep, recurrent_keep, zoneout_h, zoneout_c): i, r, o (zoneout h), c."""
    def keep(shape, p):
        return ((torch.rand(shape) >= p).to(dtype) / (1 - p))

    def zone(shape, rate):
        if eval_z:
            return torch.full(shape, rate, dtype=dtype)
        return (torch.rand(shape) < rate).to(dtype)
    return (keep((B, I), 0.3) if "i" in which else None,
            keep((B, Hout), 0.4) if "r" in which else None,
            zone((T, B, Hout), 0.3) if "o" in which else None,
            zone((T, B, H), 0.4) if "c" in which else None)


def peephole_step(x_t, h, c, w_ih, w_hh, b_ih, b_hh, w_ch, z_c=None):
    """ONE step with peepholes, written out (tanh, sigmoid), independent of torchlstm."""
    H = c.shape[1]
    a = x_t @ w_ih.t() + h @ w_hh.t()
    if b_ih is not None:
        a = a + b_ih + b_hh
    a_i, a_f, a_g, a_o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    p_i, p_f, p_o = w_ch[:H], w_ch[H:2 * H], w_ch[2 * H:]
    i = torch.sigmoid(a_i + p_i * c)
    f = torch.sigmoid(a_f + p_f * c)
    c_tilde = f * c + i * torch.tanh(a_g)
    c_new = c_tilde if z_c is None else z_c * c + (1 - z_c) * c_tilde
    o = torch.sigmoid(a_o + p_o * c_new)
    return o * torch.tanh(c_tilde), c_new


def assert_all_close(got, want, tol, what=""):
    for k, (a, e) in enumerate(zip(got, want)):
        if e is None:
            assert a is None, f"{what} {k}"
            continue
        assert a.shape == e.shape, f"{what} {k}"
        err = rel_err(a, e)
        assert err < tol, f"{what} {k}: relative error {err}"


# ------------------------------------------------------------------ the semantics
@pytest.mark.parametrize("masked,reverse,zoneout",
                         list(itertools.product([False, True], repeat=3)))
def test_reference_loop_is_the_written_out_step(masked, reverse, zoneout):
    """The reference loop's peepholes = the step written out above, outputs and grads."""
    torch.manual_seed(0)
    T, B, I, H = 6, 3, 4, 5
    mask = random_mask(T, B) if masked else None
    zc = (torch.rand(T, B, H) < 0.4).to(F64) if zoneout else None
    args = peephole_args(T, B, I, H, mask=mask, reverse=reverse,
                         regs=(None, None, None, zc))
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, *_, w_ch = args
    h, c, outs = h0, c0, [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new, c_new = peephole_step(x[t], h, c, w_ih, w_hh, b_ih, b_hh, w_ch,
                                     zc[t] if zoneout else None)
        if mask is not None:
            m = mask[t].unsqueeze(1)
            h_new, c_new = torch.where(m, h_new, h), torch.where(m, c_new, c)
        h, c = h_new, c_new
        outs[t] = h
    want = (torch.stack(outs), h, c)
    got = Reference.layer_forward(*args)[:3]
    assert_all_close(got, want, 1e-14, "forward")
    wrt = [x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ch]
    g_want = torch.autograd.grad(sum((o * o.detach().cos()).sum() for o in want), wrt)
    g_got = torch.autograd.grad(sum((o * o.detach().cos()).sum() for o in got), wrt)
    assert_all_close(g_got, g_want, 1e-13, "grad")


def test_zero_peepholes_are_the_plain_lstm():
    """weight_ch = 0: nn.LSTM's numbers exactly (stack, bidirectional, projection)."""
    torch.manual_seed(0)
    kw = dict(input_size=3, hidden_size=6, num_layers=2, bidirectional=True, proj_size=2)
    ref = torch.nn.LSTM(**kw).double()
    ours = torchlstm.LSTM(**kw, peephole=True).double()
    sd = dict(ref.state_dict())
    sd.update({k: torch.zeros_like(v) for k, v in ours.state_dict().items() if "weight_ch" in k})
    ours.load_state_dict(sd)
    x = torch.randn(5, 2, 3, dtype=F64)
    (o1, (h1, c1)), (o2, (h2, c2)) = ref(x), ours(x)
    assert_all_close((o2, h2, c2), (o1, h1, c1), 1e-13)


def test_peepholes_change_the_result():
    """The peephole terms are not a no-op (a test of the tests)."""
    torch.manual_seed(0)
    m = torchlstm.LSTM(3, 6, peephole=True).double()
    x = torch.randn(4, 2, 3, dtype=F64)
    a = m(x)[0]
    with torch.no_grad():
        m.weight_ch_l0.zero_()
    assert rel_err(m(x)[0], a) > 1e-3


# ------------------------------------------------------------------ the op (CPU kernels)
CASES = list(itertools.product([False, True], repeat=4))  # proj, bias, masked, reverse


@pytest.mark.parametrize("which,eval_z", [("", False), ("iorc", False), ("c", False),
                                          ("oc", True)])
@pytest.mark.parametrize("proj,bias,masked,reverse", CASES)
def test_op_matches_reference_float64(proj, bias, masked, reverse, which, eval_z):
    torch.manual_seed(1)
    T, B, I, H = 6, 4, 3, 7  # H = 7: AVX2 double vectors (4) and a tail
    Hout = 3 if proj else H
    reg = regs(T, B, I, H, Hout, which, eval_z)
    args = peephole_args(T, B, I, H, Hout, bias, random_mask(T, B) if masked else None,
                         reverse, regs=reg)
    got, g_got = forward_and_grads(ops, args)
    want, g_want = forward_and_grads(Reference, args)
    assert_all_close(got[:3], want[:3], 1e-12, "forward")
    assert_all_close(g_got, g_want, 1e-11, "grad")
    inf = ops.layer_inference(*args)  # inference = training forward
    for a, e in zip(inf, got[:3]):
        assert torch.equal(a, e)


@pytest.mark.parametrize("act,ract", [(a, "sigmoid") for a in activations.FUSED]
                         + [("tanh", r) for r in activations.FUSED if r != "sigmoid"])
def test_every_activation(act, ract):
    torch.manual_seed(2)
    bounded = {"tanh", "sigmoid", "hard_sigmoid", "softsign", "hard_tanh", "sparse_sigmoid"}
    scale = 1.0 if {act, ract} <= bounded else 0.15 if "exponential" in (act, ract) else 0.4
    args = peephole_args(act=act, ract=ract, scale=scale, H=6)
    with torch.no_grad():
        args[-1].mul_(scale)
    got, g_got = forward_and_grads(ops, args)
    want, g_want = forward_and_grads(Reference, args)
    # (softplus & co: the kernels' formulas are not torch's, a few ulps apart per step)
    assert_all_close(got[:3], want[:3], 1e-10, "forward")
    assert_all_close(g_got, g_want, 1e-9, "grad")


@pytest.mark.parametrize("avx512", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("zoneout,masked", [(False, False), (True, True)])
def test_float32_kernels_avx512_and_threads(avx512, threads, zoneout, masked):
    """float32 (the AVX-512 / AVX2 passes) at a size a team of two threads splits, with
    tails (H = 72: 16-lane vectors and 8 left over), against float64."""
    torch.manual_seed(3)
    T, B, I, H = 5, 16, 8, 72
    reg = regs(T, B, I, H, H, "c" if zoneout else "")
    args = peephole_args(T, B, I, H, mask=mask_for(T, B) if masked else None, regs=reg,
                         scale=0.5)
    want, g_want = forward_and_grads(Reference, args)
    args32 = [a.detach().float().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
              and a.is_floating_point() else a for a in args]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with cpu_avx512(avx512):
            got, g_got = forward_and_grads(ops, args32)
    finally:
        torch.set_num_threads(before)
    assert_all_close(got[:3], want[:3], 2e-6, "forward")
    assert_all_close(g_got, g_want, 2e-5, "grad")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes(dtype):
    torch.manual_seed(4)
    args = peephole_args(T=6, B=3, I=4, H=20, scale=0.5)
    want, g_want = forward_and_grads(Reference, args)
    low = [a.detach().to(dtype).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
           and a.is_floating_point() else a for a in args]
    got, g_got = forward_and_grads(ops, low)
    assert got[0].dtype == dtype and got[4].dtype == torch.float32  # cs kept in float32
    tol = 1e-2 if dtype == torch.float16 else 4e-2
    assert_all_close(got[:3], want[:3], tol, "forward")
    assert_all_close(g_got, g_want, 2 * tol, "grad")


def test_gradcheck_and_gradgradcheck():
    """gradcheck of the fused op (all inputs, w_ch included), with zoneout and a mask;
    gradgradcheck through the reference-loop recompute of double backward."""
    torch.manual_seed(5)
    T, B, I, H = 4, 2, 3, 3
    reg = regs(T, B, I, H, H, "rc")
    args = peephole_args(T, B, I, H, mask=random_mask(T, B), regs=reg)
    idx = [k for k, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def fn(*ts):
        a = list(args)
        for k, t in zip(idx, ts):
            a[k] = t
        return ops.layer_forward(*a)[:3]
    inputs = [args[k] for k in idx]
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_double_backward_of_the_module():
    """A gradient penalty through LSTM(peephole=True) (create_graph=True) = the same
    through the reference path (callable activations)."""
    torch.manual_seed(6)
    fused = torchlstm.LSTM(3, 5, num_layers=2, peephole=True).double()
    with warnings.catch_warnings():  # "an unfused per-step path"
        warnings.simplefilter("ignore")
        ref = torchlstm.LSTM(3, 5, num_layers=2, peephole=True, activation=torch.tanh,
                             recurrent_activation=torch.sigmoid).double()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    res = []
    for m in (fused, ref):
        out = m(x)[0]
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        res.append(torch.autograd.grad(gx.pow(2).sum(), [x] + list(m.parameters())))
    assert_all_close(res[0], res[1], 1e-11)


def test_opcheck():
    torch.manual_seed(7)
    for proj, zone in ((False, False), (True, True)):
        T, B, I, H = 3, 2, 3, 4
        Hout = 2 if proj else H
        args = peephole_args(T, B, I, H, Hout, mask=random_mask(T, B),
                             regs=regs(T, B, I, H, Hout, "iorc" if zone else ""))
        torch.library.opcheck(ops.layer_forward, args)
        torch.library.opcheck(ops.layer_inference, [a.detach() if isinstance(a, torch.Tensor)
                                                    else a for a in args])
        out, h, c, gates, cs = ops.layer_forward(*args)
        d = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        bw = [torch.randn_like(out), torch.randn_like(h), torch.randn_like(c), d[0], d[1], d[2],
              d[3], d[4], d[7], d[8], out.detach(), gates, cs, d[9], d[10], d[11], *d[12:]]
        torch.library.opcheck(ops.layer_backward, bw)
        grads = ops.layer_backward(*bw)
        assert len(grads) == 9 and grads[7].shape == (3 * H,) and grads[8].shape == (0,)


def test_torch_compile_fullgraph():
    torch.manual_seed(8)
    m = torchlstm.LSTM(3, 6, num_layers=2, bidirectional=True, peephole=True)
    x = torch.randn(5, 2, 3, requires_grad=True)
    eager = m(x)
    g_eager = torch.autograd.grad(eager[0].sum() + eager[1][1].sum(), [x] + list(m.parameters()))
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    g_got = torch.autograd.grad(got[0].sum() + got[1][1].sum(), [x] + list(m.parameters()))
    assert_all_close((got[0], got[1][0], got[1][1]), (eager[0], eager[1][0], eager[1][1]), 1e-6)
    assert_all_close(g_got, g_eager, 1e-5)


# ------------------------------------------------------------------ the modules
def _twins(cls, *a, **kw):
    """A fused module and the same module on the reference path (callable activations)."""
    act = kw.pop("activation", "tanh")
    ract = kw.pop("recurrent_activation", "sigmoid")
    fused = cls(*a, peephole=True, activation=act, recurrent_activation=ract, **kw).double()
    with warnings.catch_warnings():  # "an unfused per-step path"
        warnings.simplefilter("ignore")
        ref = cls(*a, peephole=True, activation=activations.reference(act),
                  recurrent_activation=activations.reference(ract), **kw).double()
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "data") and isinstance(out, tuple) and hasattr(out, "batch_sizes"):
        return [out.data]
    return [t for o in out for t in _flat(o)]


def _same(fused, ref, x, train=False, seed=0, **call):
    fused.train(train)
    ref.train(train)
    outs, grads = [], []
    for m in (fused, ref):
        if hasattr(m, "_rng"):
            m._rng.generator = None  # the seeded masks start afresh
        torch.manual_seed(seed)  # nn.LSTM's dropout between layers
        o = _flat(m(x, **call))
        xs = [x.data if hasattr(x, "batch_sizes") else x]
        loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view(t.shape)).sum()
                   for t in o)
        grads.append(torch.autograd.grad(loss, xs + [p for p in m.parameters()]))
        outs.append(o)
    assert_all_close(outs[0], outs[1], 1e-12, "outputs")
    assert_all_close(grads[0], grads[1], 1e-11, "grads")


MODULE_OPTIONS = [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"proj_size": 2, "num_layers": 2},
    {"bias": False, "batch_first": True},
    {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
    {"num_layers": 2, "dropout": 0.3, "train": True},
    {"zoneout": (0.2, 0.4), "seed": 3, "train": True},
    {"zoneout": 0.3},  # eval: the rate blend
    {"input_dropout": 0.2, "recurrent_dropout": 0.3, "seed": 4, "train": True,
     "bidirectional": True},
    {"go_backwards": True, "return_sequences": True, "return_state": True},
    {"unit_forget_bias": True, "init": "keras"},
]


@pytest.mark.parametrize("kw", MODULE_OPTIONS, ids=lambda kw: ",".join(
    f"{k}={v}" for k, v in kw.items()) or "default")
def test_lstm_matches_reference_path(kw):
    kw = dict(kw)
    train = kw.pop("train", False)
    torch.manual_seed(9)
    fused, ref = _twins(torchlstm.LSTM, 3, 5, **kw)
    shape = (2, 6, 3) if kw.get("batch_first") else (6, 2, 3)
    x = torch.randn(*shape, dtype=F64, requires_grad=True)
    _same(fused, ref, x, train)


def test_lstm_masks_packed_unbatched_stateful():
    torch.manual_seed(10)
    fused, ref = _twins(torchlstm.LSTM, 3, 5, bidirectional=True)
    x = torch.randn(6, 3, 3, dtype=F64, requires_grad=True)
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[4:, 0] = False
    mask[2, 1] = False  # a hole
    _same(fused, ref, x, mask=mask)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False)
    _same(fused, ref, packed)
    _same(fused, ref, torch.randn(6, 3, dtype=F64, requires_grad=True))  # unbatched
    # stateful: the second call starts from the first call's state
    fs, rs = _twins(torchlstm.LSTM, 3, 5, stateful=True)
    for _ in range(2):
        _same(fs, rs, torch.randn(4, 2, 3, dtype=F64, requires_grad=True))
    # and the packed output is what the module returns unpacked as a padded tensor
    out, _ = fused(packed)
    padded, lengths = pad_packed_sequence(out)
    assert padded.shape == (6, 3, 10) and lengths.tolist() == [6, 2, 4]


@pytest.mark.parametrize("kw", [{}, {"zoneout": 0.3}, {"bias": False},
                                {"activation": "softsign"}])
def test_lstm_cell_matches_reference_and_written_out_step(kw):
    torch.manual_seed(11)
    fused, ref = _twins(torchlstm.LSTMCell, 3, 5, **kw)
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    hx = (torch.randn(4, 5, dtype=F64), torch.randn(4, 5, dtype=F64))
    _same(fused, ref, x, hx=hx)
    _same(fused, ref, x[0].detach().requires_grad_(), hx=(hx[0][0], hx[1][0]))  # unbatched
    if not kw:
        h, c = fused(x, hx)
        h2, c2 = peephole_step(x, *hx, fused.weight_ih, fused.weight_hh, fused.bias_ih,
                               fused.bias_hh, fused.weight_ch)
        assert_all_close((h, c), (h2, c2), 1e-13)


def test_rnn_of_cell_equals_lstm():
    torch.manual_seed(12)
    cell = torchlstm.LSTMCell(3, 5, peephole=True).double()
    rnn = torchlstm.RNN(cell)
    lstm = torchlstm.LSTM(3, 5, peephole=True).double()
    lstm.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x = torch.randn(6, 2, 3, dtype=F64, requires_grad=True)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    a = rnn(x.transpose(0, 1), mask=mask)  # RNN is batch-first (Keras)
    b = lstm(x, mask=mask.t())
    out_a = a[0] if isinstance(a, tuple) else a
    out_b = b[0][-1]
    assert_all_close([out_a], [out_b], 1e-13)
    ga = torch.autograd.grad(out_a.sum(), [x, cell.weight_ch])
    gb = torch.autograd.grad(out_b.sum(), [x, lstm.weight_ch_l0])
    assert_all_close(ga, gb, 1e-12)


def test_parameters_names_init_repr():
    m = torchlstm.LSTM(3, 16, num_layers=2, bidirectional=True, peephole=True)
    names = [n for n, _ in m.named_parameters()]
    for k, sfx in itertools.product(range(2), ("", "_reverse")):
        assert f"weight_ch_l{k}{sfx}" in names
        p = getattr(m, f"weight_ch_l{k}{sfx}")
        assert p.shape == (48,) and p.abs().max() <= 0.25 and p.abs().max() > 0
    assert "peephole=True" in repr(m) and m.peephole
    assert "weight_ch_l0" not in dict(torchlstm.LSTM(3, 4).named_parameters())
    c = torchlstm.LSTMCell(3, 16, peephole=True)
    assert c.weight_ch.shape == (48,) and "peephole=True" in repr(c)
    assert not hasattr(torchlstm.LSTMCell(3, 4), "weight_ch")


def test_state_dict_and_keras_weights_round_trip():
    torch.manual_seed(13)
    a = torchlstm.LSTM(3, 5, num_layers=2, bidirectional=True, peephole=True)
    b = torchlstm.LSTM(3, 5, num_layers=2, bidirectional=True, peephole=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(b(x)[0], a(x)[0], rtol=0, atol=0)
    arrays = keras_weights.get(a)
    assert len(arrays) == 4 * 6 and arrays[3].shape == (5,)  # kernel, rec, bias, 3 peepholes
    assert (arrays[3] == a.weight_ch_l0.detach().numpy()[:5]).all()
    assert (arrays[5] == a.weight_ch_l0.detach().numpy()[10:]).all()
    c = torchlstm.LSTM(3, 5, num_layers=2, bidirectional=True, peephole=True)
    keras_weights.set(c, arrays)
    torch.testing.assert_close(c(x)[0], a(x)[0])
    with pytest.raises(ValueError, match="peephole"):
        keras_weights.set(c, arrays[:-1])
    bad = list(arrays)
    bad[4] = bad[4][:3]
    with pytest.raises(ValueError, match="forget_gate_peephole_weights"):
        keras_weights.set(c, bad)
    cell = torchlstm.LSTMCell(3, 5, peephole=True, bias=False)
    arrays = keras_weights.get(cell)
    assert len(arrays) == 5
    cell2 = torchlstm.LSTMCell(3, 5, peephole=True, bias=False)
    keras_weights.set(cell2, arrays)
    torch.testing.assert_close(cell2.weight_ch, cell.weight_ch)


@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True, "proj_size": 2},
                                {"bias": False}])
def test_torchscript(kw):
    """torch.jit.script of LSTM / LSTMCell with peepholes = eager, gradients included."""
    torch.manual_seed(18)
    m = torchlstm.LSTM(3, 5, peephole=True, **kw).double()
    s = torch.jit.script(m)
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    want, got = m(x), s(x)
    assert_all_close(_flat(got), _flat(want), 1e-14)
    g1 = torch.autograd.grad(want[0].sum(), [x] + list(m.parameters()))
    g2 = torch.autograd.grad(got[0].sum(), [x] + list(m.parameters()))
    assert_all_close(g2, g1, 1e-14)
    c = torchlstm.LSTMCell(3, 5, peephole=True, bias=kw.get("bias", True)).double()
    sc = torch.jit.script(c)
    assert_all_close(sc(x[0]), c(x[0]), 1e-14)
    g1 = torch.autograd.grad(c(x[0])[0].sum(), c.weight_ch)
    g2 = torch.autograd.grad(sc(x[0])[0].sum(), c.weight_ch)
    assert_all_close(g2, g1, 1e-14)


# ------------------------------------------------------------------ the CUDA code
@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("proj,bias,masked,reverse", CASES)
@pytest.mark.parametrize("which", ["", "iorc"])
def test_cuda_code_matches_cpu_float64(cuda, path, proj, bias, masked, reverse, which):  # noqa: F811
    if proj and path == "persistent":
        pytest.skip("the persistent kernel has no projection (launch_plan.h)")
    torch.manual_seed(14)
    T, B, I, H = 7, 3, 4, 9
    Hout = 3 if proj else H
    args = peephole_args(T, B, I, H, Hout, bias, random_mask(T, B) if masked else None,
                         reverse, regs=regs(T, B, I, H, Hout, which))
    cpu, gcpu = forward_and_grads(ops, args)
    cuda.set_path(path)
    gpu, ggpu = forward_and_grads(cuda.ops, cuda.to(args))
    assert cuda.last_path() == path
    for name, a, e in zip(["out", "h_n", "c_n", "gates", "cs"], gpu, cpu):
        assert rel_err(a, e) < 1e-12, name  # the saved gates include the peephole terms
    assert_all_close(ggpu, gcpu, 1e-11, "grad")


@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("act,ract", [("tanh", "sigmoid"), ("relu", "hard_sigmoid")])
def test_cuda_code_dtypes_and_activations(cuda, path, dtype, act, ract):  # noqa: F811
    torch.manual_seed(15)
    T, B, I, H = 6, 4, 5, 16
    args = peephole_args(T, B, I, H, mask=mask_for(T, B), act=act, ract=ract, scale=0.5,
                         regs=regs(T, B, I, H, H, "oc", eval_z=True))
    want, g_want = forward_and_grads(Reference, args)
    cuda.set_path(path)
    got, g_got = forward_and_grads(cuda.ops, cuda.to(args, dtype))
    assert cuda.last_path() == path
    tol = {torch.float32: 1e-5, torch.bfloat16: 4e-2, torch.float16: 1e-2}[dtype]
    assert_all_close(got[:3], want[:3], tol, "forward")
    assert_all_close(g_got, g_want, 2 * tol, "grad")


# ------------------------------------------------------------------ ONNX
def _onnx_lstm_with_p(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ch, reverse):
    """onnxruntime's own LSTM operator (with the peephole input P) on our weights."""
    import numpy as np
    from onnx import TensorProto, helper
    ort = pytest.importorskip("onnxruntime")
    H = c0.shape[1]

    def iofc(t):  # torch's i, f, g, o -> ONNX's i, o, f, c
        i, f, g, o = t.chunk(4, 0)
        return torch.cat([i, o, f, g], 0)
    p_i, p_f, p_o = w_ch.chunk(3)
    feeds = {"X": x, "W": iofc(w_ih)[None], "R": iofc(w_hh)[None],
             "B": torch.cat([iofc(b_ih), iofc(b_hh)])[None], "h0": h0[None], "c0": c0[None],
             "P": torch.cat([p_i, p_o, p_f])[None]}
    feeds = {k: v.detach().float().numpy() for k, v in feeds.items()}
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0", "P"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H, direction="reverse" if reverse else "forward")
    graph = helper.make_graph(
        [node], "peephole",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in
         feeds.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in ("Y", "Y_h", "Y_c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, y_h, y_c = s.run(None, feeds)
    return [torch.from_numpy(np.asarray(a)) for a in (y[:, 0], y_h[0], y_c[0])]


@pytest.mark.parametrize("reverse", [False, True])
def test_onnxruntime_lstm_with_p(reverse):
    """Our peepholes are the ONNX LSTM's (P reordered i, o, f), as onnxruntime runs it."""
    torch.manual_seed(16)
    args = peephole_args(T=7, B=3, I=4, H=6, reverse=reverse, dtype=torch.float32,
                         requires_grad=False)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, *_, w_ch = args
    got = ops.layer_inference(*args)
    want = _onnx_lstm_with_p(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ch, reverse)
    assert_all_close(got, want, 1e-5)
    # and the peepholes matter there too: without P onnxruntime disagrees with us
    assert rel_err(got[0], _onnx_lstm_with_p(x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                             torch.zeros_like(w_ch), reverse)[0]) > 1e-3


@pytest.mark.parametrize("kw,expect", [
    ({}, "LSTM"),
    ({"num_layers": 2, "bidirectional": True}, "LSTM"),
    ({"proj_size": 2}, "Scan"),
    ({"zoneout": 0.3}, "Scan"),
    ({"activation": "gelu"}, "Scan"),
], ids=["plain", "stacked-bidirectional", "proj", "zoneout-eval", "gelu"])
def test_onnx_export(kw, expect, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(17)
    m = torchlstm.LSTM(3, 6, peephole=True, **kw).eval()
    x = torch.randn(5, 2, 3)
    prog = torch.onnx.export(m, (x,), dynamo=True, verbose=False)
    op_types = [n.op_type for n in prog.model.graph]
    assert expect in op_types, op_types
    if expect == "LSTM":  # the P input is given
        lstm = next(n for n in prog.model.graph if n.op_type == "LSTM")
        assert len(lstm.inputs) == 8 and lstm.inputs[7] is not None
    path = str(tmp_path / "m.onnx")
    prog.save(path)
    got = run_onnxruntime(path, x)
    with torch.no_grad():
        out, (h, c) = m(x)
    assert_all_close(got, [out, h, c], 1e-5)


def test_torch_export_and_jit_trace():
    """torch.export (the fake kernels' shapes) and torch.jit.trace of LSTM(peephole=True)."""
    torch.manual_seed(19)
    m = torchlstm.LSTM(3, 5, num_layers=2, peephole=True).eval()
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        want = m(x)
        prog = torch.export.export(m, (x,))
        got = prog.module()(x)
        traced = torch.jit.trace(m, (x,))
        got_t = traced(torch.randn(4, 2, 3) * 0 + x)
    assert_all_close(_flat(got), _flat(want), 1e-6)
    assert_all_close(_flat(got_t), _flat(want), 1e-6)
