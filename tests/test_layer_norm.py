"""Layer-normalised LSTM (issue 16; Ba et al. 2016, haste's LayerNormLSTM):

    a   = LN(W_ih x_t; g_ih) + LN(W_hh h_{t-1}; g_hh) + b_ih + b_hh   (LN over 4H, no shift)
    c~  = ract(a_f) c_{t-1} + ract(a_i) act(a_g)                        (carried un-normalised)
    h~  = ract(a_o) act(LN(c~; g_c, b_c))                               (LN over H), then W_hr
    LN(v) = (v - mean v) / sqrt(var v + eps)   (biased variance; eps = layer_norm_eps)

with peepholes added to a after the LN (a_i += p_i c_{t-1}, a_f += p_f c_{t-1},
a_o += p_o c_t), zoneout blending the carried c and h (z c_{t-1} + (1-z) c~: LN(c) only
turns the fresh c~ into h~), a masked step carrying h and c over. Checked in float64
against a step written out here (its own mean / variance, not F.layer_norm), over a grid
of options: outputs, states and every gradient; gradcheck, gradgradcheck (double
backward), the modules (LSTM, LSTMCell, RNN(cell), masks, PackedSequence, stateful,
dropout / zoneout), parameters, init, state_dict, errors, torch.compile."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import torchlstm
from torchlstm import _ops, activations
from support import cpu_avx512, cpu_setting, random_mask, rel_err, run_onnxruntime

F64 = torch.float64
EPS = 1e-5


# ------------------------------------------------------------------ the written-out step
def ln(v, scale, shift=None, eps=EPS):
    """Layer norm over the last axis, written out (independent of F.layer_norm)."""
    mean = v.sum(-1, keepdim=True) / v.shape[-1]
    d = v - mean
    var = (d * d).sum(-1, keepdim=True) / v.shape[-1]
    out = d / torch.sqrt(var + eps) * scale
    return out if shift is None else out + shift


def ln_step(x_t, h, c, p, act, ract, z_c=None, eps=EPS):
    """ONE layer-normalised step (p: the layer's parameters by name) -> (h~, c_t)."""
    H = c.shape[1]
    a = ln(x_t @ p["w_ih"].t(), p["ln_ih"], eps=eps) + ln(h @ p["w_hh"].t(), p["ln_hh"], eps=eps)
    if p.get("b_ih") is not None:
        a = a + p["b_ih"] + p["b_hh"]
    a_i, a_f, a_g, a_o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    w_ch = p.get("w_ch")
    if w_ch is not None:
        a_i = a_i + w_ch[:H] * c
        a_f = a_f + w_ch[H:2 * H] * c
    c_tilde = ract(a_f) * c + ract(a_i) * act(a_g)
    c_new = c_tilde if z_c is None else z_c * c + (1 - z_c) * c_tilde
    if w_ch is not None:
        a_o = a_o + w_ch[2 * H:] * c_new
    h_new = ract(a_o) * act(ln(c_tilde, p["ln_c"], p["ln_bc"], eps=eps))
    if p.get("w_hr") is not None:
        h_new = h_new @ p["w_hr"].t()
    return h_new, c_new


def ln_layer(x, h0, c0, p, act, ract, mask=None, reverse=False, ik=None, rk=None, zh=None,
             zc=None, eps=EPS):
    """The written-out layer over time: (output, h_n, c_n)."""
    T = x.shape[0]
    if ik is not None:
        x = x * ik
    h, c, outs = h0, c0, [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_in = h if rk is None else h * rk
        h_new, c_new = ln_step(x[t], h_in, c, p, act, ract, None if zc is None else zc[t], eps)
        if zh is not None:
            h_new = zh[t] * h + (1 - zh[t]) * h_new
        if mask is not None:
            m = mask[t].unsqueeze(1)
            h_new, c_new = torch.where(m, h_new, h), torch.where(m, c_new, c)
        h, c = h_new, c_new
        outs[t] = h
    return torch.stack(outs), h, c


def layer_params(I, H, Hout, bias=True, peephole=False, proj=False, scale=1.0):
    def r(*s, k=1.0):
        return (torch.randn(*s, dtype=F64) * k).requires_grad_()
    return {"w_ih": r(4 * H, I, k=0.5 * scale), "w_hh": r(4 * H, Hout, k=0.5 * scale),
            "b_ih": r(4 * H) if bias else None, "b_hh": r(4 * H) if bias else None,
            "w_hr": r(Hout, H, k=0.5) if proj else None,
            "w_ch": r(3 * H) if peephole else None,
            "ln_ih": (1 + 0.3 * torch.randn(4 * H, dtype=F64)).requires_grad_(),
            "ln_hh": (1 + 0.3 * torch.randn(4 * H, dtype=F64)).requires_grad_(),
            "ln_c": (1 + 0.3 * torch.randn(H, dtype=F64)).requires_grad_(),
            "ln_bc": r(H, k=0.3)}


def as_layer_weights(p):
    return _ops.LayerWeights(p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], p["w_hr"], p["w_ch"],
                             p["ln_ih"], p["ln_hh"], p["ln_c"], p["ln_bc"])


def regs(T, B, I, H, Hout, which, eval_z=False):
    """(input_keep, recurrent_keep, zoneout_h, zoneout_c): i, r, o (zoneout h), c."""
    def keep(shape, rate):
        return (torch.rand(shape) >= rate).to(F64) / (1 - rate)

    def zone(shape, rate):
        return torch.full(shape, rate, dtype=F64) if eval_z else (torch.rand(shape) < rate).to(F64)
    return _ops.LayerRegularizers(keep((B, I), 0.3) if "i" in which else None,
                                  keep((B, Hout), 0.4) if "r" in which else None,
                                  zone((T, B, Hout), 0.3) if "o" in which else None,
                                  zone((T, B, H), 0.4) if "c" in which else None)


def assert_all_close(got, want, tol, what=""):
    assert len(got) == len(want), what
    for k, (a, e) in enumerate(zip(got, want)):
        if e is None:
            assert a is None, f"{what} {k}"
            continue
        assert a is not None and a.shape == e.shape, f"{what} {k}"
        err = rel_err(a, e)
        assert err < tol, f"{what} {k}: relative error {err}"


def weighted_loss(outs):
    return sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view(t.shape)).sum()
               for t in outs)


# ------------------------------------------------------------------ the layer, a grid
GRID = list(itertools.product([False, True], [True, False], [False, True], [False, True],
                              [False, True]))


@pytest.mark.parametrize("proj,bias,masked,reverse,peephole", GRID)
@pytest.mark.parametrize("which,eval_z", [("", False), ("iorc", False), ("oc", True)])
def test_layer_matches_written_out_float64(proj, bias, masked, reverse, peephole, which, eval_z):
    """run_layer (what every module calls) = the written-out loop: outputs, h_n, c_n and
    the gradient of every input and parameter, float64."""
    torch.manual_seed(1)
    T, B, I, H = 6, 3, 4, 5
    Hout = 3 if proj else H
    p = layer_params(I, H, Hout, bias, peephole, proj)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0 = torch.randn(B, Hout, dtype=F64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=F64, requires_grad=True)
    mask = random_mask(T, B) if masked else None
    reg = regs(T, B, I, H, Hout, which, eval_z)
    got = _ops.run_layer(x, h0, c0, as_layer_weights(p), mask=mask, reverse=reverse,
                         activation=0, recurrent_activation=1, reg=reg)
    want = ln_layer(x, h0, c0, p, torch.tanh, torch.sigmoid, mask, reverse, *reg)
    assert_all_close(got, want, 1e-13, "forward")
    wrt = [x, h0, c0] + [v for v in p.values() if v is not None]
    g_got = torch.autograd.grad(weighted_loss(got), wrt)
    g_want = torch.autograd.grad(weighted_loss(want), wrt)
    assert_all_close(g_got, g_want, 1e-10, "grad")


@pytest.mark.parametrize("act,ract", [("tanh", "sigmoid"), ("relu", "hard_sigmoid"),
                                      ("softsign", "sigmoid"), ("elu", "hard_silu"),
                                      ("linear", "sigmoid")])
def test_layer_activations(act, ract):
    """recurrent_activation in place of sigma, activation of act (LN keeps even linear /
    relu bounded)."""
    torch.manual_seed(2)
    T, B, I, H = 5, 2, 3, 4
    p = layer_params(I, H, H, peephole=True)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0, c0 = torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64)
    got = _ops.run_layer(x, h0, c0, as_layer_weights(p), mask=None, reverse=False,
                         activation=activations.resolve(act),
                         recurrent_activation=activations.resolve(ract))
    fa, fr = activations.reference(act), activations.reference(ract)
    want = ln_layer(x, h0, c0, p, fa, fr)
    assert_all_close(got, want, 1e-13, "forward")
    wrt = [x] + [v for v in p.values() if v is not None]
    assert_all_close(torch.autograd.grad(weighted_loss(got), wrt),
                     torch.autograd.grad(weighted_loss(want), wrt), 1e-10, "grad")


def test_layer_norm_eps():
    """layer_norm_eps is the variance epsilon of all three norms (a large one shows it)."""
    torch.manual_seed(3)
    T, B, I, H = 4, 2, 3, 4
    p = layer_params(I, H, H)
    x = torch.randn(T, B, I, dtype=F64)
    h0, c0 = torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64)
    got = _ops.run_layer(x, h0, c0, as_layer_weights(p), mask=None, reverse=False,
                         activation=0, recurrent_activation=1, layer_norm_eps=0.5)
    assert_all_close(got, ln_layer(x, h0, c0, p, torch.tanh, torch.sigmoid, eps=0.5), 1e-13)
    other = ln_layer(x, h0, c0, p, torch.tanh, torch.sigmoid)
    assert rel_err(got[0], other[0]) > 1e-3


def test_gradcheck_and_gradgradcheck():
    """First and second derivatives (double backward) of every input and parameter,
    peepholes, projection, a mask and zoneout (eval blend) included."""
    torch.manual_seed(4)
    T, B, I, H, Hout = 3, 2, 2, 3, 2
    p = layer_params(I, H, Hout, peephole=True, proj=True)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0 = torch.randn(B, Hout, dtype=F64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True], [True, False], [False, True]])
    reg = regs(T, B, I, H, Hout, "oc", eval_z=True)
    names = [k for k, v in p.items() if v is not None]

    def f(x, h0, c0, *ws):
        q = dict(p, **dict(zip(names, ws)))
        return _ops.run_layer(x, h0, c0, as_layer_weights(q), mask=mask, reverse=True,
                              activation=0, recurrent_activation=1, reg=reg)
    inputs = (x, h0, c0, *[p[k] for k in names])
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


# ------------------------------------------------------------------ the modules
def module_layers(m):
    """The written-out parameters of each (layer, direction) of a torchlstm module."""
    keys = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_ch", "ln_ih", "ln_hh", "ln_c", "ln_bc")
    return [dict(zip(keys, w)) for w in m.layer_weights()]


def written_out_stack(m, x, h0, c0, mask=None, act=torch.tanh, ract=torch.sigmoid):
    """An eval-mode LSTM, layer by layer, with the written-out layer (time-major x)."""
    D = 2 if m.bidirectional else 1
    layers = module_layers(m)
    h_n, c_n = [], []
    for layer in range(m.num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            o, h, c = ln_layer(x, h0[k], c0[k], layers[k], act, ract, mask, d == 1,
                               eps=m.layer_norm_eps)
            outs.append(o)
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outs, 2)
    return x, torch.stack(h_n), torch.stack(c_n)


def randomise_ln(m):
    """LN parameters away from their ones / zeros (so a missing term shows)."""
    with torch.no_grad():
        for n, q in m.named_parameters():
            if n.startswith("ln_"):
                q.add_(0.3 * torch.randn_like(q))


STACKS = [{}, {"num_layers": 2, "bidirectional": True}, {"proj_size": 2, "num_layers": 2},
          {"bias": False}, {"peephole": True, "bidirectional": True},
          {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
          {"layer_norm_eps": 1e-3, "proj_size": 3, "peephole": True}]


@pytest.mark.parametrize("kw", STACKS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items())
                         or "default")
def test_lstm_matches_written_out_stack(kw):
    torch.manual_seed(5)
    m = torchlstm.LSTM(3, 5, layer_norm=True, **kw).double()
    randomise_ln(m)
    D = 2 if m.bidirectional else 1
    Hout = m.proj_size or 5
    x = torch.randn(6, 2, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(m.num_layers * D, 2, Hout, dtype=F64)
    c0 = torch.randn(m.num_layers * D, 2, 5, dtype=F64)
    out, (h, c) = m(x, (h0, c0))
    act = activations.reference(kw.get("activation", "tanh"))
    ract = activations.reference(kw.get("recurrent_activation", "sigmoid"))
    want = written_out_stack(m, x, h0, c0, act=act, ract=ract)
    assert_all_close((out, h, c), want, 1e-13, "forward")
    wrt = [x] + list(m.parameters())
    assert_all_close(torch.autograd.grad(weighted_loss((out, h, c)), wrt),
                     torch.autograd.grad(weighted_loss(want), wrt), 1e-10, "grad")


def test_lstm_masks_packed_batch_first_unbatched_go_backwards():
    torch.manual_seed(6)
    m = torchlstm.LSTM(3, 5, layer_norm=True, bidirectional=True).double()
    randomise_ln(m)
    x = torch.randn(6, 3, 3, dtype=F64, requires_grad=True)
    zeros = torch.zeros(2, 3, 5, dtype=F64)
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[4:, 0] = False
    mask[2, 1] = False  # a hole: h and c carried over
    out, (h, c) = m(x, mask=mask)
    want = written_out_stack(m, x, zeros, zeros, mask)
    assert_all_close((h, c), want[1:], 1e-13, "masked states")
    # PackedSequence: the right-padded mask of its lengths
    lengths = torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    _, (hp, cp) = m(packed)
    pmask = torch.arange(6).unsqueeze(1) < lengths.unsqueeze(0)
    assert_all_close((hp, cp), written_out_stack(m, x, zeros, zeros, pmask)[1:], 1e-13, "packed")
    # batch_first and unbatched give the same numbers
    mb = torchlstm.LSTM(3, 5, layer_norm=True, bidirectional=True, batch_first=True).double()
    mb.load_state_dict(m.state_dict())
    ob, _ = mb(x.transpose(0, 1))
    assert_all_close([ob.transpose(0, 1)], [m(x)[0]], 1e-14)
    ou, (hu, _) = m(x[:, 1])
    assert_all_close([ou, hu], [m(x)[0][:, 1], m(x)[1][0][:, 1]], 1e-14)
    # go_backwards: the reversed sequence
    mg = torchlstm.LSTM(3, 5, layer_norm=True, go_backwards=True, return_sequences=True,
                        return_state=True).double()
    randomise_ln(mg)
    o, hg, cg = mg(x)
    z1 = torch.zeros(1, 3, 5, dtype=F64)
    want = written_out_stack(mg, x.flip(0), z1, z1)
    assert_all_close((o.transpose(0, 1) if o.dim() == 3 and o.shape[0] == 3 else o, hg, cg),
                     (want[0], want[1][0], want[2][0]), 1e-13, "go_backwards")


def test_lstm_cell_rnn_and_lstm_agree():
    torch.manual_seed(7)
    cell = torchlstm.LSTMCell(3, 5, layer_norm=True, peephole=True).double()
    randomise_ln(cell)
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    hx = (torch.randn(4, 5, dtype=F64), torch.randn(4, 5, dtype=F64))
    h, c = cell(x, hx)
    p = module_layers(cell)[0]
    want = ln_step(x, *hx, p, torch.tanh, torch.sigmoid)
    assert_all_close((h, c), want, 1e-13, "cell")
    wrt = [x] + list(cell.parameters())
    assert_all_close(torch.autograd.grad(weighted_loss((h, c)), wrt),
                     torch.autograd.grad(weighted_loss(want), wrt), 1e-10, "cell grad")
    hu, cu = cell(x[0], (hx[0][0], hx[1][0]))  # unbatched
    assert_all_close((hu, cu), (h[0], c[0]), 1e-14)
    # RNN(cell) == LSTM with the cell's weights
    rnn = torchlstm.RNN(cell)
    lstm = torchlstm.LSTM(3, 5, layer_norm=True, peephole=True).double()
    lstm.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    xs = torch.randn(6, 2, 3, dtype=F64, requires_grad=True)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    a = rnn(xs.transpose(0, 1), mask=mask)
    out_a = a[0] if isinstance(a, tuple) else a
    out_b = lstm(xs, mask=mask.t())[1][0][-1]
    assert_all_close([out_a], [out_b], 1e-13)
    ga = torch.autograd.grad(out_a.sum(), [xs, cell.ln_weight_c, cell.ln_weight_hh])
    gb = torch.autograd.grad(out_b.sum(), [xs, lstm.ln_weight_c_l0, lstm.ln_weight_hh_l0])
    assert_all_close(ga, gb, 1e-10)


def test_stateful_dropout_zoneout_seeded():
    """Training-mode regularisers run and are reproducible with a seed; stateful carries
    the state; eval-mode zoneout is the rate blend of the written-out loop."""
    torch.manual_seed(8)
    kw = dict(layer_norm=True, input_dropout=0.2, recurrent_dropout=0.3, zoneout=(0.2, 0.4),
              seed=3, num_layers=2, dropout=0.3)
    a = torchlstm.LSTM(3, 5, **kw).double().train()
    b = torchlstm.LSTM(3, 5, **kw).double().train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 2, 3, dtype=F64)
    torch.manual_seed(0)
    oa = a(x)[0]
    torch.manual_seed(0)
    ob = b(x)[0]
    torch.testing.assert_close(oa, ob, rtol=0, atol=0)
    assert torch.isfinite(oa).all()
    # eval zoneout: the blend rate * old + (1 - rate) * new
    m = torchlstm.LSTM(3, 5, layer_norm=True, zoneout=(0.3, 0.4)).double().eval()
    randomise_ln(m)
    z = torch.zeros(2, 5, dtype=F64)
    p = module_layers(m)[0]
    want = ln_layer(x, z, z, p, torch.tanh, torch.sigmoid,
                    zh=torch.full((5, 2, 5), 0.3, dtype=F64),
                    zc=torch.full((5, 2, 5), 0.4, dtype=F64))
    out, (h, c) = m(x)
    assert_all_close((out, h[0], c[0]), want, 1e-13)
    # stateful: the second call starts where the first ended
    s = torchlstm.LSTM(3, 5, layer_norm=True, stateful=True).double()
    s.load_state_dict(m.state_dict())
    s(x[:2])
    _, (h2, _) = s(x[2:])
    ref = torchlstm.LSTM(3, 5, layer_norm=True).double()
    ref.load_state_dict(m.state_dict())
    assert_all_close([h2], [ref(x)[1][0]], 1e-13)


def test_module_gradgradcheck():
    """Double backward through the module (a gradient penalty's path)."""
    torch.manual_seed(9)
    m = torchlstm.LSTM(2, 3, layer_norm=True, bidirectional=True, proj_size=2).double()
    randomise_ln(m)
    x = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    gamma = m.ln_weight_hh_l0

    def f(x, g):
        return torch.func.functional_call(m, {"ln_weight_hh_l0": g}, (x,))[0]
    assert torch.autograd.gradcheck(f, (x, gamma))
    assert torch.autograd.gradgradcheck(f, (x, gamma))


def test_parameters_names_init_repr_state_dict():
    torch.manual_seed(10)
    m = torchlstm.LSTM(3, 16, num_layers=2, bidirectional=True, layer_norm=True)
    names = [n for n, _ in m.named_parameters()]
    for k, sfx in itertools.product(range(2), ("", "_reverse")):
        for base, size, value in (("ln_weight_ih", 64, 1.0), ("ln_weight_hh", 64, 1.0),
                                  ("ln_weight_c", 16, 1.0), ("ln_bias_c", 16, 0.0)):
            name = f"{base}_l{k}{sfx}"
            assert name in names
            q = getattr(m, name)
            assert q.shape == (size,) and (q == value).all()
    assert "layer_norm=True" in repr(m) and m.layer_norm and m.layer_norm_eps == 1e-5
    assert "layer_norm_eps=0.001" in repr(torchlstm.LSTM(3, 4, layer_norm=True,
                                                         layer_norm_eps=1e-3))
    assert not any(n.startswith("ln_") for n, _ in torchlstm.LSTM(3, 4).named_parameters())
    # the other weights are nn.LSTM's for a seed (the LN parameters draw nothing)
    torch.manual_seed(1)
    ref = torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True)
    torch.manual_seed(1)
    ours = torchlstm.LSTM(3, 16, num_layers=2, bidirectional=True, layer_norm=True)
    sd = ours.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(sd[k], v), k
    for init in ("keras",):
        k = torchlstm.LSTM(3, 4, layer_norm=True, init=init, unit_forget_bias=True)
        assert (k.ln_weight_ih_l0 == 1).all() and (k.ln_bias_c_l0 == 0).all()
    c = torchlstm.LSTMCell(3, 16, layer_norm=True)
    assert [n for n, _ in c.named_parameters()][-4:] == [
        "ln_weight_ih", "ln_weight_hh", "ln_weight_c", "ln_bias_c"]
    assert "layer_norm=True" in repr(c)
    assert not hasattr(torchlstm.LSTMCell(3, 4), "ln_weight_c")
    # state_dict round trip
    randomise_ln(m)
    b = torchlstm.LSTM(3, 16, num_layers=2, bidirectional=True, layer_norm=True)
    b.load_state_dict(m.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(b(x)[0], m(x)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="ln_weight_c_l0"):
        torchlstm.LSTM(3, 16, num_layers=2, bidirectional=True).load_state_dict(m.state_dict())


@pytest.mark.parametrize("kw,exc,match", [
    ({"layer_norm": 1}, TypeError, "layer_norm should be of type bool"),
    ({"layer_norm": True, "layer_norm_eps": 0.0}, ValueError, "layer_norm_eps"),
    ({"layer_norm": True, "layer_norm_eps": -1e-5}, ValueError, "layer_norm_eps"),
    ({"layer_norm": True, "layer_norm_eps": "1e-5"}, ValueError, "layer_norm_eps"),
    ({"layer_norm": True, "layer_norm_eps": float("inf")}, ValueError, "layer_norm_eps"),
])
@pytest.mark.parametrize("cls", [torchlstm.LSTM, torchlstm.LSTMCell])
def test_bad_options(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(3, 4, **kw)


def test_missing_ln_parameter_is_named():
    m = torchlstm.LSTM(3, 4, layer_norm=True)
    m.ln_weight_hh_l0 = None
    with pytest.raises(TypeError, match="ln_weight_hh_l0 is None"):
        m(torch.randn(2, 1, 3))
    c = torchlstm.LSTMCell(3, 4, layer_norm=True)
    c.ln_bias_c = None
    with pytest.raises(TypeError, match="ln_bias_c is None"):
        c(torch.randn(2, 3))


def test_float32_and_autograd_modes():
    """float32 agrees with float64; no_grad (the inference path) gives the same numbers."""
    torch.manual_seed(11)
    m = torchlstm.LSTM(4, 8, layer_norm=True, num_layers=2).double()
    randomise_ln(m)
    x = torch.randn(7, 3, 4, dtype=F64)
    want = m(x)[0]
    with torch.no_grad():
        assert_all_close([m(x)[0]], [want], 1e-15)
    m32 = torchlstm.LSTM(4, 8, layer_norm=True, num_layers=2)
    m32.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    assert rel_err(m32(x.float())[0], want) < 1e-5


def test_torch_compile_fullgraph():
    torch.manual_seed(12)
    m = torchlstm.LSTM(3, 4, layer_norm=True, peephole=True)
    randomise_ln(m)
    x = torch.randn(4, 2, 3, requires_grad=True)
    eager = m(x)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    assert_all_close([compiled[0], *compiled[1]], [eager[0], *eager[1]], 1e-6)
    g_e = torch.autograd.grad(eager[0].sum(), [x, m.ln_weight_c_l0])
    g_c = torch.autograd.grad(compiled[0].sum(), [x, m.ln_weight_c_l0])
    assert_all_close(g_c, g_e, 1e-5)


@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True, "proj_size": 2,
                                     "peephole": True, "bias": False}],
                         ids=["plain", "stacked-bidirectional-proj-peephole-nobias"])
def test_torchscript_matches_eager(kw):
    """torch.jit.script of a layer-normalised LSTM / LSTMCell: the scripted twin calls the
    fused op with the layer-norm arguments; outputs and every gradient equal the eager
    module's, and layer_norm_eps reaches it."""
    torch.manual_seed(23)
    m = torchlstm.LSTM(3, 5, layer_norm=True, layer_norm_eps=1e-3, **kw).double()
    randomise_ln(m)
    s = torch.jit.script(m)
    x = torch.randn(4, 2, 3, dtype=F64)
    want = m(x)
    got = s(x)
    assert_all_close([got[0], *got[1]], [want[0], *want[1]], 1e-14)
    g_want = torch.autograd.grad(weighted_loss([want[0]]), list(m.parameters()))
    g_got = torch.autograd.grad(weighted_loss([got[0]]), list(m.parameters()))
    assert_all_close(g_got, g_want, 1e-13)
    other = torchlstm.LSTM(3, 5, layer_norm=True, **kw).double()
    other.load_state_dict(m.state_dict())
    assert rel_err(other(x)[0], want[0]) > 1e-8  # eps 1e-5 differs: the eps was passed
    cell = torchlstm.LSTMCell(3, 5, layer_norm=True, peephole=True).double()
    randomise_ln(cell)
    sc = torch.jit.script(cell)
    assert_all_close(list(sc(x[0])), list(cell(x[0])), 1e-14)
    with torch.no_grad():
        assert_all_close(list(sc(x[0])), list(cell(x[0])), 1e-14)
        assert_all_close([s(x)[0]], [m(x)[0]], 1e-14)


def test_keras_weights_round_trip():
    from torchlstm import keras_weights
    torch.manual_seed(13)
    a = torchlstm.LSTM(3, 5, num_layers=2, bidirectional=True, layer_norm=True, peephole=True)
    randomise_ln(a)
    arrays = keras_weights.get(a)
    per = 3 + 3 + 4  # kernel, recurrent_kernel, bias, 3 peepholes, 4 layer-norm weights
    assert len(arrays) == 4 * per
    assert [x.shape for x in arrays[6:10]] == [(20,), (20,), (5,), (5,)]
    assert (arrays[8] == a.ln_weight_c_l0.detach().numpy()).all()
    c = torchlstm.LSTM(3, 5, num_layers=2, bidirectional=True, layer_norm=True, peephole=True)
    keras_weights.set(c, arrays)
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(c(x)[0], a(x)[0])  # bias_ih + bias_hh: rounding only
    with pytest.raises(ValueError, match="4 layer-norm weights"):
        keras_weights.set(c, arrays[:-1])
    bad = list(arrays)
    bad[9] = bad[9][:3]
    with pytest.raises(ValueError, match="ln_bias_c #0"):
        keras_weights.set(c, bad)
    cell = torchlstm.LSTMCell(3, 5, layer_norm=True, bias=False)
    randomise_ln(cell)
    arrays = keras_weights.get(cell)
    assert len(arrays) == 6
    cell2 = torchlstm.LSTMCell(3, 5, layer_norm=True, bias=False)
    keras_weights.set(cell2, arrays)
    for n in ("ln_weight_ih", "ln_weight_hh", "ln_weight_c", "ln_bias_c"):
        torch.testing.assert_close(getattr(cell2, n), getattr(cell, n), rtol=0, atol=0)


def test_cpu_runs_the_fused_kernels(monkeypatch):
    """On the CPU, layer_norm=True runs the fused kernels (csrc/cpu/layer_norm_loops.h):
    the modules never reach the reference loop, forward, backward or inference."""
    def no_loop(*a, **k):
        raise AssertionError("the reference loop ran with layer_norm=True on the CPU")
    monkeypatch.setattr(_ops._reference, "layer_forward", no_loop)
    torch.manual_seed(14)
    m = torchlstm.LSTM(3, 4, layer_norm=True, num_layers=2, peephole=True)
    x = torch.randn(5, 2, 3, requires_grad=True)
    m(x)[0].sum().backward()
    assert x.grad is not None and m.ln_weight_ih_l0.grad is not None
    with torch.no_grad():
        m(x)
    torchlstm.LSTMCell(3, 4, layer_norm=True)(x[0])[0].sum().backward()


# sizes that give the CPU a team of two threads (4 H Hout B multiply-adds per step over
# 65 thousand; csrc/cpu/time_loops.h threads_for): the row pass by rows and the GEMMs by
# columns ('units') or by rows ('rows': no barrier), each split across the team
TEAM_CASES = {
    "plain": dict(),
    "proj-mask-reverse": dict(proj=True, masked=True, reverse=True),
    "peephole-zoneout-dropout": dict(peephole=True, which="iorc"),
    "proj-peephole-eval-zoneout-nobias": dict(proj=True, peephole=True, which="oc",
                                              eval_z=True, bias=False),
}


def large_blases():
    return ["mkl"] + (["openblas"] if torchlstm._C.cpu_openblas_loaded() else [])


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("gemm,blas", [("auto", b) for b in large_blases()]
                         + [(g, "auto") for g in ("avx512", "avx2", "blas")])
@pytest.mark.parametrize("case", TEAM_CASES, ids=list(TEAM_CASES))
@pytest.mark.parametrize("split,B", [("units", 16), ("rows", 16), ("rows", 3), ("units", 3),
                                     ("rows", 1)])
def test_fused_team_every_gemm_engine(case, gemm, blas, dtype, split, B):
    """The fused CPU loops with a team of two on every GEMM engine of the time loops and
    of the large products (x W_ih^T, the weight gradients: MKL, OpenBLAS), each forced by
    its switch so all run on any machine (the own micro-kernels serve float32), and both
    ways of splitting a step (rows: B = 3 splits unevenly, B = 1 leaves a member idle) =
    the written-out loop in float64: outputs, states and every gradient."""
    kw = TEAM_CASES[case]
    torch.manual_seed(21)
    T, I, H = 7, 24, 96 if B > 1 else 128
    Hout = 64 if kw.get("proj") else H
    p = layer_params(I, H, Hout, kw.get("bias", True), kw.get("peephole", False),
                     kw.get("proj", False), scale=0.3)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0 = torch.randn(B, Hout, dtype=F64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=F64, requires_grad=True)
    mask = None
    if kw.get("masked"):  # random_mask wants 3 rows; one row: some steps masked
        mask = random_mask(T, B) if B >= 3 else torch.arange(T).remainder(3).ne(1).view(T, 1)
    reg = regs(T, B, I, H, Hout, kw.get("which", ""), kw.get("eval_z", False))
    want = ln_layer(x, h0, c0, p, torch.tanh, torch.sigmoid, mask, kw.get("reverse", False),
                    *reg)
    wrt = [x, h0, c0] + [v for v in p.values() if v is not None]
    g_want = torch.autograd.grad(weighted_loss(want), wrt)
    low = {k: None if v is None else v.detach().to(dtype).requires_grad_() for k, v in p.items()}
    xs = [t.detach().to(dtype).requires_grad_() for t in (x, h0, c0)]
    reg_low = _ops.LayerRegularizers(*(None if r is None else r.to(dtype) for r in reg))
    with cpu_setting(torchlstm._C.set_cpu_gemm, gemm), \
            cpu_setting(torchlstm._C.set_cpu_blas, blas), \
            cpu_setting(torchlstm._C.set_cpu_split, split):
        got = _ops.run_layer(*xs, as_layer_weights(low), mask=mask,
                             reverse=kw.get("reverse", False), activation=0,
                             recurrent_activation=1, reg=reg_low)
        g_got = torch.autograd.grad(weighted_loss(got),
                                    xs + [v for v in low.values() if v is not None])
    tol = 1e-12 if dtype == F64 else 1e-4
    assert_all_close([t.to(F64) for t in got], want, tol, "forward")
    assert_all_close([g.to(F64) for g in g_got], g_want, 100 * tol, "grad")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 5e-2),
                                       (torch.float16, 1e-2)])
@pytest.mark.parametrize("avx512", [True, False])
def test_fused_low_precision_against_float64(dtype, tol, avx512):
    """float32 (SIMD vectors and their scalar tails: H = 37), float16 and bfloat16 (run in
    float32, cast back) on the fused kernels, against float64: outputs and gradients."""
    torch.manual_seed(22)
    T, B, I, H = 6, 12, 10, 37
    p64 = layer_params(I, H, H, peephole=True, scale=0.5)
    x64 = torch.randn(T, B, I, dtype=F64)
    h64, c64 = torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64)
    p = {k: None if v is None else v.detach().to(dtype).requires_grad_() for k, v in p64.items()}
    x = x64.to(dtype).requires_grad_()
    with cpu_avx512(avx512):
        got = _ops.run_layer(x, h64.to(dtype), c64.to(dtype), as_layer_weights(p), mask=None,
                             reverse=False, activation=0, recurrent_activation=1)
        g_got = torch.autograd.grad(weighted_loss([t.float() for t in got]),
                                    [x, p["w_hh"], p["ln_ih"], p["ln_c"]])
    pr = {k: None if v is None else v.detach().to(dtype).to(F64).requires_grad_()
          for k, v in p64.items()}
    xr = x.detach().to(F64).requires_grad_()
    want = ln_layer(xr, h64.to(dtype).to(F64), c64.to(dtype).to(F64), pr, torch.tanh,
                    torch.sigmoid)
    assert_all_close([t.to(F64) for t in got], want, tol, "forward")
    g_want = torch.autograd.grad(weighted_loss(want), [xr, pr["w_hh"], pr["ln_ih"], pr["ln_c"]])
    assert_all_close([g.to(F64) for g in g_got], g_want, 10 * tol, "grad")


def op_args(T=4, B=3, I=5, H=6, dtype=F64, requires_grad=False):
    g = torch.Generator().manual_seed(5)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype).requires_grad_(requires_grad)
    return (r(T, B, I), r(B, H), r(B, H), r(4 * H, I), r(4 * H, H), r(4 * H), r(4 * H), None,
            None, False, 0, 1, None, None, None, None, None, r(4 * H), r(4 * H), r(H), r(H), 1e-5)


def test_op_opcheck_and_gradcheck():
    """The layer op with its layer-norm arguments: opcheck (schema, fake kernel, autograd
    registration) and gradcheck through layer_forward, ln_w_* included."""
    torch.library.opcheck(_ops.ops.layer_forward, op_args())
    torch.library.opcheck(_ops.ops.layer_inference, op_args())
    a = op_args()
    out, h_n, c_n, gates, cs = _ops.ops.layer_forward(*a)
    # (its outputs must be separate tensors: d_bias and d_ln were views of one buffer)
    torch.library.opcheck(_ops.ops.layer_backward, (
        torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n), a[0], a[1], a[2],
        a[3], a[4], None, None, out, gates, cs, False, 0, 1, None, None, None, None, None,
        *a[17:22], a[5], a[6]))
    args = op_args(T=3, B=2, I=2, H=3, requires_grad=True)
    idx = [0, 1, 2, 3, 4, 5, 17, 18, 19, 20]

    def f(*ts):
        a = list(args)
        for i, t in zip(idx, ts):
            a[i] = t
        return _ops.ops.layer_forward(*a)[:3]
    assert torch.autograd.gradcheck(f, [args[i] for i in idx])


@pytest.mark.parametrize("change,exc,match", [
    (lambda a: a.__setitem__(20, None), ValueError, "all four of ln_w_ih"),
    (lambda a: a.__setitem__(19, a[19][:-1]), ValueError, "ln_w_c must have shape"),
    (lambda a: a.__setitem__(17, a[17].float()), TypeError, "ln_w_ih must have the dtype"),
    (lambda a: a.__setitem__(18, a[18].to("meta")), RuntimeError, "ln_w_hh must be on the device"),
    (lambda a: a.__setitem__(21, 0.0), ValueError, "layer_norm_eps must be a positive"),
])
def test_op_bad_layer_norm_arguments_are_named(change, exc, match):
    args = list(op_args())
    change(args)
    with pytest.raises(exc, match=match):
        _ops.ops.layer_forward(*args)


@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True, "proj_size": 2,
                                     "peephole": True}, {"zoneout": 0.3, "bias": False}],
                         ids=["plain", "stacked-bidirectional-proj-peephole", "zoneout-nobias"])
def test_onnx_export_onnxruntime(kw, tmp_path):
    """ONNX (dynamo=True): the fused op becomes a Scan over time with ONNX's
    LayerNormalization (on x W_ih^T before it, on h W_hh^T and c~ in its body); no
    torchlstm op is left, and onnxruntime gives the module's numbers."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(17)
    m = torchlstm.LSTM(3, 6, layer_norm=True, **kw).eval()
    randomise_ln(m)
    x = torch.randn(5, 2, 3)
    prog = torch.onnx.export(m, (x,), dynamo=True, verbose=False)
    op_types = {n.op_type for n in prog.model.graph}
    domains = {n.domain for n in prog.model.graph}
    assert {"LayerNormalization", "Scan"} <= op_types, op_types
    assert not any("torchlstm" in d for d in domains), domains
    path = str(tmp_path / "m.onnx")
    prog.save(path)
    got = run_onnxruntime(path, x)
    with torch.no_grad():
        out, (h, c) = m(x)
    assert_all_close(got, [out, h, c], 1e-5)


def test_torch_export_and_jit_trace():
    torch.manual_seed(19)
    m = torchlstm.LSTM(3, 5, num_layers=2, layer_norm=True, peephole=True).eval()
    randomise_ln(m)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        want = m(x)
        got = torch.export.export(m, (x,)).module()(x)
        traced = torch.jit.trace(m, (x,))
        got_t = traced(x.clone())
    for g in (got, got_t):
        assert_all_close([g[0], *g[1]], [want[0], *want[1]], 1e-6)


@pytest.mark.parametrize("need_grad", [True, False])
def test_input_size_zero(need_grad):
    """input_size 0 (as nn.LSTMCell(0, H) accepts): x W_ih^T is zero, LN of it too."""
    torch.manual_seed(24)
    T, B, H = 4, 3, 5
    p = layer_params(0, H, H)
    x = torch.randn(T, B, 0, dtype=F64)
    h0, c0 = torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64)
    got = _ops.run_layer(x, h0, c0, as_layer_weights(p), mask=None, reverse=False,
                         activation=0, recurrent_activation=1, need_grad=need_grad)
    want = ln_layer(x, h0, c0, p, torch.tanh, torch.sigmoid)
    assert_all_close(got, want, 1e-13)
