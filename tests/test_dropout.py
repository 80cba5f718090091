"""Keras dropout (input_dropout, recurrent_dropout) and zoneout: the op against the
reference loop (outputs and every gradient), gradcheck, opcheck, the modules'
determinism, eval mode, statistics, masks constant over time, RNN(LSTMCell) == LSTM,
the unfused path and bad input."""

import pytest
import torch

import torchlstm
from support import CASES, assert_close, assert_same_lstm, layer_args, lstm_layer, randn, random_mask, regularizers

ops = torch.ops.torchlstm
I, H, P, T, B = 3, 4, 2, 5, 3


def wrt_of(args):
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


# ----------------------------------------------------------------------------- the op
@pytest.mark.parametrize("proj,bias,masked,reverse", CASES)
@pytest.mark.parametrize("which,eval_z", [("iorc", False), ("ir", False), ("oc", False),
                                          ("o", False), ("c", False), ("oc", True)])
def test_op_vs_reference_outputs_and_gradients(proj, bias, masked, reverse, which, eval_z):
    args = layer_args(proj, bias, random_mask() if masked else None, reverse)
    reg = regularizers(Hout=P if proj else H, which=which, eval_z=eval_z)
    got = ops.layer_forward(*args, *reg)[:3]
    want = lstm_layer(*args[:9], reverse=reverse, input_keep=reg[0], recurrent_keep=reg[1],
                      zoneout_h=reg[2], zoneout_c=reg[3])
    for a, e in zip(got, want):
        assert_close(a, e, torch.float64)
    for a, e in zip(ops.layer_inference(*args, *reg), want):
        assert_close(a, e, torch.float64)
    g = [randn(*t.shape) for t in want]
    for a, e in zip(torch.autograd.grad(got, wrt_of(args), g),
                    torch.autograd.grad(want, wrt_of(args), g)):
        assert_close(a, e, torch.float64)


@pytest.mark.parametrize("proj,masked,reverse", [(False, False, False), (True, True, True),
                                                 (False, True, True), (True, False, False)])
@pytest.mark.parametrize("eval_z", [False, True])
def test_op_gradcheck_with_regularizers(proj, masked, reverse, eval_z):
    args = layer_args(proj, True, random_mask() if masked else None, reverse)
    reg = regularizers(Hout=P if proj else H, eval_z=eval_z)
    assert torch.autograd.gradcheck(lambda *a: ops.layer_forward(*a, *reg)[:3], args)


@pytest.mark.parametrize("proj", [False, True])
def test_op_float32_team_sizes_vs_float64_reference(proj):
    """Sizes that run the thread team (the recurrent-dropout product is shared between
    members) and SIMD tails (H=37 is not a multiple of 8), float32 against float64."""
    for T_, B_, H_, Hout in ((6, 16, 96, 64 if proj else 96), (4, 5, 37, 11 if proj else 37)):
        args = (randn(T_, B_, 8), randn(B_, Hout), randn(B_, H_), randn(4 * H_, 8, scale=0.3),
                randn(4 * H_, Hout, scale=0.3), randn(4 * H_), randn(4 * H_),
                randn(Hout, H_, scale=0.3) if proj else None, random_mask(T_, B_), False, 0, 1)
        reg = regularizers(T_, B_, 8, H_, Hout)
        want = lstm_layer(*args[:9], input_keep=reg[0], recurrent_keep=reg[1],
                          zoneout_h=reg[2], zoneout_c=reg[3])
        f32 = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
               for a in args]
        got = ops.layer_forward(*f32, *(r.float() for r in reg))[:3]
        for a, e in zip(got, want):
            torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=2e-5)


def test_op_zero_rates_are_the_plain_op():
    """All-keep masks and z = 0 change nothing (bit for bit)."""
    args = layer_args(proj=True, mask=random_mask(), reverse=True)
    Hout = P
    reg = (torch.ones(B, I, dtype=torch.float64), torch.ones(B, Hout, dtype=torch.float64),
           torch.zeros(T, B, Hout, dtype=torch.float64), torch.zeros(T, B, H, dtype=torch.float64))
    for a, e in zip(ops.layer_forward(*args, *reg)[:3], ops.layer_forward(*args)[:3]):
        assert torch.equal(a, e)


@pytest.mark.parametrize("proj,masked,reverse", [(False, False, False), (True, True, True)])
def test_opcheck_with_regularizers(proj, masked, reverse):
    args = layer_args(proj=proj, mask=random_mask() if masked else None, reverse=reverse,
                      dtype=torch.float32)
    reg = tuple(r.float().contiguous() for r in regularizers(Hout=P if proj else H))
    torch.library.opcheck(ops.layer_forward, args + reg)
    torch.library.opcheck(ops.layer_inference, tuple(
        a.detach() if isinstance(a, torch.Tensor) else a for a in args) + reg,
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    with torch.no_grad():
        out, h, c, gates, cs = ops.layer_forward(*args, *reg)
    bw_args = (randn(*out.shape, dtype=torch.float32), randn(*h.shape, dtype=torch.float32),
               randn(*c.shape, dtype=torch.float32)) + tuple(
        a.detach() if isinstance(a, torch.Tensor) else a for a in args[:5]) + (
        args[7].detach() if proj else None, args[8], out, gates, cs, reverse, 0, 1) + reg
    torch.library.opcheck(ops.layer_backward, bw_args)


def test_no_gradient_reaches_the_masks():
    args = layer_args()
    reg = [r.requires_grad_() for r in regularizers()]
    out = ops.layer_forward(*args, *reg)[0]
    grads = torch.autograd.grad(out.sum(), reg, allow_unused=True)
    assert all(g is None for g in grads)


@pytest.mark.parametrize("index,name,shape,pattern", [
    (12, "input_keep", (B, I + 1), r"input_keep must have shape \[3, 3\] \(batch, input_size\)"),
    (13, "recurrent_keep", (B + 1, H), r"recurrent_keep must have shape \[3, 4\]"),
    (14, "zoneout_h", (B, H), r"zoneout_h must have shape \[5, 3, 4\] \(seq_len, batch"),
    (15, "zoneout_c", (T, B, H, 1), r"zoneout_c must have shape \[5, 3, 4\]"),
])
def test_op_regularizer_errors(index, name, shape, pattern):
    args = list(layer_args(requires_grad=False)) + list(regularizers())
    bad = list(args)
    bad[index] = torch.rand(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=pattern):
        ops.layer_forward(*bad)
    with pytest.raises(ValueError, match=pattern):
        ops.layer_inference(*bad)
    bad[index] = args[index].float()
    with pytest.raises(TypeError, match=f"{name} must have the dtype of input"):
        ops.layer_forward(*bad)
    out, h, c, gates, cs = ops.layer_forward(*args)
    bw = [out, h, c] + args[:5] + [None, None, out, gates, cs, False, 0, 1] + args[12:]
    ops.layer_backward(*bw)
    bw[16 + index - 12] = torch.rand(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=pattern):
        ops.layer_backward(*bw)


# ----------------------------------------------------------------------------- modules
KW = dict(input_dropout=0.3, recurrent_dropout=0.25, zoneout=(0.2, 0.35))


def replay(module, x, seed, h0=None, c0=None):
    """What a training-mode module must compute: the reference loop per layer and
    direction, with the masks drawn up front from a generator seeded like the module's, in
    the documented order (per layer, per direction: input mask, recurrent mask, zoneout h,
    zoneout c). x is time-major. One mask per sequence: used at every step."""
    g = torch.Generator().manual_seed(seed)
    D = 2 if module.bidirectional else 1
    Hc, Hout = module.hidden_size, module.proj_size or module.hidden_size
    Tn, Bn = x.shape[:2]
    p_i, p_r = module.input_dropout, module.recurrent_dropout
    z_h, z_c = module.zoneout if isinstance(module.zoneout, tuple) else (module.zoneout,) * 2
    hs, cs = [], []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = [getattr(module, n + sfx, None) for n in
                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
            new = lambda *s: x.new_empty(s)  # noqa: E731
            ik = new(Bn, x.shape[2]).bernoulli_(1 - p_i, generator=g) / (1 - p_i) if p_i else None
            rk = new(Bn, Hout).bernoulli_(1 - p_r, generator=g) / (1 - p_r) if p_r else None
            zh = new(Tn, Bn, Hout).bernoulli_(z_h, generator=g) if z_h else None
            zc = new(Tn, Bn, Hc).bernoulli_(z_c, generator=g) if z_c else None
            o, h, c = lstm_layer(x, x.new_zeros(Bn, Hout) if h0 is None else h0[k],
                                 x.new_zeros(Bn, Hc) if c0 is None else c0[k], *w,
                                 reverse=d == 1, input_keep=ik, recurrent_keep=rk,
                                 zoneout_h=zh, zoneout_c=zc)
            outs.append(o)
            hs.append(h)
            cs.append(c)
        x = torch.cat(outs, dim=2)
    return x, torch.stack(hs), torch.stack(cs)


@pytest.mark.parametrize("num_layers,bidirectional,proj_size",
                         [(1, False, 0), (2, True, 0), (2, False, 2), (1, True, 3)])
def test_module_equals_reference_with_one_mask_per_sequence(num_layers, bidirectional,
                                                            proj_size):
    """Training mode: the module computes the reference loop run with ONE input and ONE
    recurrent mask per layer and direction, drawn up front (so the kernel uses the same
    mask at every step), and z per step — outputs and gradients."""
    m = torchlstm.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional,
                       proj_size=proj_size, dtype=torch.float64, seed=11, **KW)
    x = randn(T, B, I, requires_grad=True)
    out, (h_n, c_n) = m(x)
    want = replay(m, x, 11)
    for a, e in zip((out, h_n, c_n), want):
        assert_close(a, e, torch.float64)
    wrt = [x] + list(m.parameters())
    ga = torch.autograd.grad(out.pow(2).sum() + c_n.sum(), wrt)
    ge = torch.autograd.grad(want[0].pow(2).sum() + want[2].sum(), wrt)
    for a, e in zip(ga, ge):
        assert_close(a, e, torch.float64)


def test_input_mask_constant_over_time_from_gradient_structure():
    """dx = (dgates W_ih) * input_keep: a dropped (batch, feature) has zero gradient at
    EVERY step, a kept one at none (random data)."""
    m = torchlstm.LSTM(16, 8, input_dropout=0.5, dtype=torch.float64, seed=3)
    x = randn(9, 12, 16, requires_grad=True)
    out, _ = m(x)
    g, = torch.autograd.grad(out.sum(), x)
    zero = g == 0
    assert zero.any() and not zero.all()
    assert torch.equal(zero, zero[:1].expand_as(zero)), "the input mask changed over time"


def test_same_seed_same_results_different_seed_differs():
    def run(seed, calls=2):
        torch.manual_seed(0)
        m = torchlstm.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64,
                           seed=seed, **KW)
        x = randn(T, B, I, requires_grad=True)
        res = []
        for _ in range(calls):  # successive calls draw new masks from the module's generator
            out, (h, c) = m(x)
            res.append((out, h, c) + torch.autograd.grad(out.sum() + c.sum(),
                                                         [x] + list(m.parameters())))
        return res
    a, b, c = run(5), run(5), run(6)
    for ra, rb in zip(a, b):
        assert all(torch.equal(u, v) for u, v in zip(ra, rb))
    assert not torch.equal(a[0][0], c[0][0])
    assert not torch.equal(a[0][0], a[1][0]), "each call draws new masks"


def test_seed_does_not_touch_the_global_rng_and_no_seed_uses_it():
    m = torchlstm.LSTM(I, H, dtype=torch.float64, seed=1, **KW)
    x = randn(T, B, I)
    torch.manual_seed(42)
    m(x)
    after = torch.rand(3)
    torch.manual_seed(42)
    assert torch.equal(torch.rand(3), after)
    free = torchlstm.LSTM(I, H, dtype=torch.float64, **KW)
    torch.manual_seed(7)
    o1, _ = free(x)
    torch.manual_seed(7)
    o2, _ = free(x)
    assert torch.equal(o1, o2)


def test_eval_mode_has_no_dropout_and_zoneout_is_the_rate_blend():
    torch.manual_seed(0)
    plain = torchlstm.LSTM(I, H, num_layers=2, proj_size=2, dtype=torch.float64)
    drop = torchlstm.LSTM(I, H, num_layers=2, proj_size=2, dtype=torch.float64,
                          input_dropout=0.5, recurrent_dropout=0.5, seed=1)
    drop.load_state_dict(plain.state_dict())
    x = randn(T, B, I)
    drop.eval()
    for a, e in zip(drop(x)[0:1] + drop(x)[1], plain(x)[0:1] + plain(x)[1]):
        assert torch.equal(a, e)
    drop.train()
    assert not torch.equal(drop(x)[0], plain(x)[0])

    zo = torchlstm.LSTM(I, H, dtype=torch.float64, zoneout=(0.3, 0.6)).eval()
    out, (h, c) = zo(x)
    w = [zo.weight_ih_l0, zo.weight_hh_l0, zo.bias_ih_l0, zo.bias_hh_l0]
    want = lstm_layer(x, torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64),
                      *w, zoneout_h=torch.full((T, B, H), 0.3, dtype=torch.float64),
                      zoneout_c=torch.full((T, B, H), 0.6, dtype=torch.float64))
    for a, e in zip((out, h[0], c[0]), want):
        assert_close(a, e, torch.float64)
    # a PackedSequence's padding still carries the state over (the mask wins)
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    lengths = torch.tensor([5, 2, 4])
    packed_out, (hp, cp) = zo(pack_padded_sequence(x, lengths, enforce_sorted=False))
    valid = torch.arange(T)[:, None] < lengths[None, :]
    want = lstm_layer(x, torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64),
                      *w, mask=valid, zoneout_h=torch.full((T, B, H), 0.3, dtype=torch.float64),
                      zoneout_c=torch.full((T, B, H), 0.6, dtype=torch.float64))
    padded, _ = pad_packed_sequence(packed_out)
    assert_close(padded, want[0] * valid[..., None], torch.float64)
    assert_close(hp[0], want[1], torch.float64)
    assert_close(cp[0], want[2], torch.float64)


def test_statistics_of_the_masks():
    """Fractions of dropped inputs, dropped recurrent units and zoned-out units ≈ the rates;
    the kept values are scaled by 1/(1-p), which keeps the expectation."""
    Bn, In, Hn = 64, 64, 64
    m = torchlstm.LSTM(In, Hn, input_dropout=0.3, recurrent_dropout=0.4, dtype=torch.float64,
                       seed=0)
    x = randn(3, Bn, In, requires_grad=True)
    h0 = randn(1, Bn, Hn, requires_grad=True)
    out, _ = m(x, (h0, randn(1, Bn, Hn)))
    gx, gh0 = torch.autograd.grad(out.sum(), [x, h0])
    assert abs((gx[0] == 0).double().mean().item() - 0.3) < 0.04
    assert abs((gh0[0] == 0).double().mean().item() - 0.4) < 0.04
    # the masks the module draws: 0 or 1/(1-p), mean ≈ 1 (the expectation is kept)
    from torchlstm import _regularizers
    from torchlstm._options import CellOptions
    ik, rk, _, _ = _regularizers.draw(CellOptions.make("LSTM", input_dropout=0.3,
                                                       recurrent_dropout=0.4),
                                      True, 1, 4096, 8, 8, 1, x.detach(), None)
    for keep, p in ((ik, 0.3), (rk, 0.4)):
        assert set(keep.unique().tolist()) <= {0.0, 1 / (1 - p)}
        assert abs(keep.mean().item() - 1) < 0.03
    # zoneout: a kept unit of h repeats its previous value exactly
    zo = torchlstm.LSTM(In, Hn, zoneout=(0.25, 0.5), dtype=torch.float64, seed=0)
    out, _ = zo(randn(6, Bn, In))
    assert abs((out[1:] == out[:-1]).double().mean().item() - 0.25) < 0.03
    c0 = randn(1, 4 * Bn, Hn)
    _, (_, c1) = zo(randn(1, 4 * Bn, In), (randn(1, 4 * Bn, Hn), c0))
    assert abs((c1 == c0).double().mean().item() - 0.5) < 0.03


@pytest.mark.parametrize("masked,go_backwards", [(False, False), (True, True)])
def test_rnn_of_cell_equals_lstm_in_training(masked, go_backwards):
    kw = dict(activation="relu", recurrent_activation="hard_sigmoid", dtype=torch.float64,
              seed=9, **KW)
    cell = torchlstm.LSTMCell(I, H, **kw)
    rnn = torchlstm.RNN(cell, return_sequences=True, return_state=True,
                        go_backwards=go_backwards)
    lstm = torchlstm.LSTM(I, H, batch_first=True, return_sequences=True, return_state=True,
                          go_backwards=go_backwards, **kw)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, n + "_l0").copy_(getattr(cell, n))
    x = randn(B, T, I, requires_grad=True)
    mask = (torch.rand(B, T) > 0.3) if masked else None
    for _ in range(2):  # two calls: the generators advance alike
        got, want = rnn(x, mask=mask), lstm(x, mask=mask)
        for a, e in zip(got, want):
            assert torch.equal(a, e), "RNN(cell) must be exactly LSTM"
        ga = torch.autograd.grad(sum(t.sum() for t in got), [x] + list(cell.parameters()))
        ge = torch.autograd.grad(sum(t.sum() for t in want), [x] + list(lstm.parameters()))
        for a, e in zip(ga, ge):
            assert torch.equal(a, e)
    cell.eval(), lstm.eval()
    for a, e in zip(rnn(x, mask=mask), lstm(x, mask=mask)):
        assert torch.equal(a, e)


def test_standalone_cell_fresh_masks_per_call_and_eval_blend():
    cell = torchlstm.LSTMCell(I, H, dtype=torch.float64, seed=4, **KW)
    x, h, c = randn(B, I), randn(B, H), randn(B, H)
    a, b = cell(x, (h, c)), cell(x, (h, c))
    assert not torch.equal(a[0], b[0]), "training: each call draws new masks"
    # one call is one step of the reference with masks drawn in the documented order
    g = torch.Generator().manual_seed(4)
    ik = x.new_empty(B, I).bernoulli_(0.7, generator=g) / 0.7
    rk = x.new_empty(B, H).bernoulli_(0.75, generator=g) / 0.75
    zh = x.new_empty(1, B, H).bernoulli_(0.2, generator=g)
    zc = x.new_empty(1, B, H).bernoulli_(0.35, generator=g)
    w = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    want = lstm_layer(x[None], h, c, *w, input_keep=ik, recurrent_keep=rk, zoneout_h=zh,
                      zoneout_c=zc)[1:]
    for u, v in zip(a, want):
        assert_close(u, v, torch.float64)
    cell.eval()
    want = lstm_layer(x[None], h, c, *w, zoneout_h=torch.full((1, B, H), 0.2, dtype=torch.float64),
                      zoneout_c=torch.full((1, B, H), 0.35, dtype=torch.float64))[1:]
    for u, v in zip(cell(x, (h, c)), want):
        assert_close(u, v, torch.float64)
    hu, cu = cell(x[0], (h[0], c[0]))  # unbatched
    assert hu.shape == (H,) and cu.shape == (H,)


def test_callable_activation_unfused_path_honours_the_options():
    with pytest.warns(UserWarning, match="unfused"):
        unfused = torchlstm.LSTM(I, H, num_layers=2, proj_size=2, dtype=torch.float64,
                                 activation=lambda v: torch.nn.functional.gelu(v), seed=2, **KW)
    fused = torchlstm.LSTM(I, H, num_layers=2, proj_size=2, dtype=torch.float64,
                           activation="gelu", seed=2, **KW)
    fused.load_state_dict(unfused.state_dict())
    x = randn(T, B, I, requires_grad=True)
    for mode in ("train", "eval"):
        getattr(fused, mode)(), getattr(unfused, mode)()
        assert_same_lstm(fused, unfused, x)
    with pytest.warns(UserWarning, match="unfused"):
        cell = torchlstm.LSTMCell(I, H, recurrent_activation=lambda v: torch.sigmoid(v),
                                  dtype=torch.float64, seed=3, **KW)
    ref = torchlstm.LSTMCell(I, H, dtype=torch.float64, seed=3, **KW)
    ref.load_state_dict(cell.state_dict())
    xs = randn(B, T, I)
    assert_close(torchlstm.RNN(cell, return_sequences=True)(xs),
                 torchlstm.RNN(ref, return_sequences=True)(xs), torch.float64)


def test_no_options_draw_nothing():
    """Defaults (and zero rates with a seed) leave the RNG alone and the op untouched."""
    m = torchlstm.LSTM(I, H, dtype=torch.float64, seed=3)
    x = randn(T, B, I)
    state = torch.get_rng_state()
    m(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert m._rng.generator is None


def test_repr_and_attributes():
    m = torchlstm.LSTM(I, H, input_dropout=0.1, zoneout=0.2, seed=3)
    assert repr(m) == "LSTM(3, 4, input_dropout=0.1, zoneout=0.2, seed=3)"
    assert repr(torchlstm.LSTM(I, H)) == "LSTM(3, 4)"
    cell = torchlstm.LSTMCell(I, H, recurrent_dropout=0.5, zoneout=(0.1, 0.0))
    assert repr(cell) == "LSTMCell(3, 4, recurrent_dropout=0.5, zoneout=(0.1, 0.0))"
    assert (cell.input_dropout, cell.recurrent_dropout, cell.zoneout, cell.seed) == \
        (0.0, 0.5, (0.1, 0.0), None)


@pytest.mark.parametrize("cls", [torchlstm.LSTM, torchlstm.LSTMCell])
@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(input_dropout=1.0), ValueError, r"input_dropout should be a number in range \[0, 1\)"),
    (dict(input_dropout=-0.1), ValueError, "input_dropout should be"),
    (dict(recurrent_dropout=1.5), ValueError, "recurrent_dropout should be"),
    (dict(recurrent_dropout=True), ValueError, "recurrent_dropout should be"),
    (dict(zoneout=1.0), ValueError, "zoneout should be"),
    (dict(zoneout=(0.1, 1.0)), ValueError, r"zoneout\[1\] \(the c rate\) should be"),
    (dict(zoneout=(0.1, 0.2, 0.3)), ValueError, r"zoneout should be a rate or a pair"),
    (dict(zoneout="0.1"), ValueError, "zoneout should be"),
    (dict(seed=1.5), TypeError, "seed should be None or an int"),
])
def test_bad_options(cls, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(I, H, **kwargs)


def test_compile_fullgraph():
    """Training without a seed (the global RNG) and eval with one trace without a graph
    break. (A seeded module in training draws from its torch.Generator, which Dynamo
    cannot trace: that is documented, not tested.)"""
    torch._dynamo.reset()
    m = torchlstm.LSTM(I, H, batch_first=True, dtype=torch.float32, **KW)
    x = randn(2, T, I, dtype=torch.float32, requires_grad=True)
    out, _ = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    g, = torch.autograd.grad(out.sum(), x)
    assert out.shape == (2, T, H) and g.shape == x.shape
    torch._dynamo.reset()
    seeded = torchlstm.LSTM(I, H, batch_first=True, dtype=torch.float32, seed=1, **KW).eval()
    assert_close(torch.compile(seeded, fullgraph=True, backend="aot_eager")(x)[0],
                 seeded(x)[0], torch.float32)
