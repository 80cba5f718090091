"""torchlstm.LSTM against torch.nn.LSTM: outputs, final states and every gradient."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import torchlstm
from support import assert_close, cpu_avx512, randn, twin_lstms

I, H, T, B = 5, 7, 6, 4


def run_and_grad(model, x, hx, grad_out, grad_h, grad_c):
    out, (h, c) = model(x, hx)
    data = out.data if hasattr(out, "batch_sizes") else out
    loss = (data * grad_out).sum() + (h * grad_h).sum() + (c * grad_c).sum()
    inputs = [x.data if hasattr(x, "batch_sizes") else x] + list(hx or []) + list(model.parameters())
    grads = torch.autograd.grad(loss, [t for t in inputs if t.requires_grad])
    return data, h, c, grads


GRID = list(itertools.product([1, 2, 3], [False, True], [False, True], [0, 3], [True, False]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,proj_size,bias", GRID)
def test_matches_nn_lstm(num_layers, bidirectional, batch_first, proj_size, bias, dtype):
    kw = dict(input_size=I, hidden_size=H, num_layers=num_layers, bias=bias,
              batch_first=batch_first, bidirectional=bidirectional, proj_size=proj_size,
              dtype=dtype)
    ref, ours = twin_lstms(**kw)
    D = 2 if bidirectional else 1
    Hout = proj_size or H
    x = randn(*((B, T, I) if batch_first else (T, B, I)), dtype=dtype, requires_grad=True)
    hx = (randn(num_layers * D, B, Hout, dtype=dtype, requires_grad=True),
          randn(num_layers * D, B, H, dtype=dtype, requires_grad=True))
    out_shape = (B, T, D * Hout) if batch_first else (T, B, D * Hout)
    g = (randn(*out_shape, dtype=dtype), randn(num_layers * D, B, Hout, dtype=dtype),
         randn(num_layers * D, B, H, dtype=dtype))
    expected = run_and_grad(ref, x, hx, *g)
    actual = run_and_grad(ours, x, hx, *g)
    names = ["output", "h_n", "c_n"]
    for name, a, e in zip(names, actual[:3], expected[:3]):
        assert a.shape == e.shape, name
        assert_close(a, e, dtype, name)
    grad_names = ["x", "h0", "c0"] + [n for n, _ in ours.named_parameters()]
    assert len(actual[3]) == len(expected[3]) == len(grad_names)
    for name, a, e in zip(grad_names, actual[3], expected[3]):
        assert_close(a, e, dtype, f"grad {name}")


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched(batch_first, with_hx):
    ref, ours = twin_lstms(input_size=I, hidden_size=H, num_layers=2, bidirectional=True,
                           batch_first=batch_first, dtype=torch.float64)
    x = randn(T, I, requires_grad=True)
    hx = (randn(4, H), randn(4, H)) if with_hx else None
    (o1, (h1, c1)), (o2, (h2, c2)) = ref(x, hx), ours(x, hx)
    assert o2.shape == o1.shape == (T, 2 * H) and h2.shape == h1.shape == (4, H)
    for a, e in ((o2, o1), (h2, h1), (c2, c1)):
        assert_close(a, e, torch.float64)
    gx1, = torch.autograd.grad(o1.sum() + c1.sum(), x)
    gx2, = torch.autograd.grad(o2.sum() + c2.sum(), x)
    assert_close(gx2, gx1, torch.float64)


@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size",
                         [(1, False, 0), (2, True, 0), (2, True, 3), (1, True, 3)])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_sequence(enforce_sorted, num_layers, bidirectional, proj_size, with_hx):
    dtype = torch.float64
    ref, ours = twin_lstms(input_size=I, hidden_size=H, num_layers=num_layers,
                           bidirectional=bidirectional, proj_size=proj_size, dtype=dtype)
    lengths = torch.tensor([6, 6, 5, 3, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 5, 2])
    Bp = len(lengths)
    padded = randn(6, Bp, I, requires_grad=True)
    D = 2 if bidirectional else 1
    Hout = proj_size or H
    hx = ((randn(num_layers * D, Bp, Hout, requires_grad=True),
           randn(num_layers * D, Bp, H, requires_grad=True)) if with_hx else None)
    results = []
    for model in (ref, ours):
        packed = pack_padded_sequence(padded, lengths, enforce_sorted=enforce_sorted)
        out, (h, c) = model(packed, hx)
        assert type(out) is type(packed)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        for a, b in ((out.sorted_indices, packed.sorted_indices),
                     (out.unsorted_indices, packed.unsorted_indices)):
            assert (a is None and b is None) or torch.equal(a, b)
        unpacked, out_len = pad_packed_sequence(out)
        assert torch.equal(out_len, lengths)
        loss = (unpacked * torch.linspace(-1, 1, unpacked.numel(), dtype=dtype)
                .view_as(unpacked)).sum() + h.sum() * 0.5 + (c * c).sum()
        wrt = [padded] + (list(hx) if with_hx else []) + list(model.parameters())
        results.append((unpacked, h, c) + torch.autograd.grad(loss, wrt))
    for i, (e, a) in enumerate(zip(*results)):
        assert_close(a, e, dtype, f"result {i}")


def test_state_dict_both_ways():
    kw = dict(input_size=I, hidden_size=H, num_layers=2, bidirectional=True, proj_size=3)
    ref = torch.nn.LSTM(**kw)
    ours = torchlstm.LSTM(**kw)
    assert list(ref.state_dict()) == list(ours.state_dict())
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in ours.named_parameters()]
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = randn(T, B, I, dtype=torch.float32)
    assert_close(ours(x)[0], ref(x)[0], torch.float32)
    ours2 = torchlstm.LSTM(**kw)
    ref2 = torch.nn.LSTM(**kw)
    ref2.load_state_dict(ours2.state_dict(), strict=True)
    assert_close(ours2(x)[0], ref2(x)[0], torch.float32)
    no_bias_ref = torch.nn.LSTM(I, H, bias=False)
    assert list(torchlstm.LSTM(I, H, bias=False).state_dict()) == list(no_bias_ref.state_dict())


def test_init_distribution_and_seed():
    ref, ours = twin_lstms(input_size=I, hidden_size=16, num_layers=2)
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ours.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    bound = 1 / 16 ** 0.5
    assert all(p.abs().max() <= bound for p in ours.parameters())


def test_dropout_between_layers():
    ref, ours = twin_lstms(input_size=I, hidden_size=H, num_layers=3, dropout=0.5,
                           dtype=torch.float64)
    x = randn(T, B, I)
    ref.eval(), ours.eval()
    assert_close(ours(x)[0], ref(x)[0], torch.float64, "eval: no dropout")
    ours.train()
    o1, o2 = ours(x)[0], ours(x)[0]
    assert not torch.allclose(o1, o2), "training: dropout must be active"
    ours.eval()
    assert_close(ours(x)[0], ref(x)[0], torch.float64)
    with pytest.warns(UserWarning, match="dropout"):
        torchlstm.LSTM(I, H, num_layers=1, dropout=0.3)


def test_extra_repr_and_api():
    m = torchlstm.LSTM(3, 8, num_layers=2, batch_first=True, bidirectional=True, proj_size=4)
    r = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True, bidirectional=True, proj_size=4)
    assert repr(m) == repr(r)
    assert [[p.shape for p in ws] for ws in m.all_weights] == \
        [[p.shape for p in ws] for ws in r.all_weights]
    m.flatten_parameters()
    k = torchlstm.LSTM(3, 8, recurrent_activation="hard_sigmoid", return_sequences=True)
    assert "hard_sigmoid" in repr(k) and "return_sequences=True" in repr(k)


def test_zero_batch_like_nn():
    ref, ours = twin_lstms(input_size=I, hidden_size=H)
    x = randn(T, 0, I, dtype=torch.float32, requires_grad=True)
    o1, (h1, _) = ref(x)
    o2, (h2, _) = ours(x)
    assert o2.shape == o1.shape and h2.shape == h1.shape
    o2.sum().backward()
    assert x.grad.shape == x.shape


def test_zero_length_sequence_like_nn():
    ref, ours = twin_lstms(input_size=I, hidden_size=H)
    x = randn(0, B, I, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="sequence length") as e_ref:
        ref(x)
    with pytest.raises(RuntimeError, match="sequence length") as e_ours:
        ours(x)
    assert str(e_ours.value) == str(e_ref.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("avx512", [True, False], ids=["avx512", "avx2"])
def test_nan_in_input_shows_in_output_like_nn(dtype, grad, avx512):
    """A NaN must not be silently absorbed (the float32 fast exps clamp their argument),
    in the AVX-512 gate passes (where the CPU has them) as in the AVX2 ones."""
    ref, ours = twin_lstms(input_size=I, hidden_size=16, dtype=dtype)
    x = randn(T, B, I, dtype=dtype)
    x[2, 1, 3] = float("nan")
    with cpu_avx512(avx512), torch.set_grad_enabled(grad):
        o1, (h1, c1) = ref(x)
        o2, (h2, c2) = ours(x)
    for a, e in ((o2, o1), (h2, h1), (c2, c1)):
        assert torch.equal(torch.isnan(a), torch.isnan(e))
    assert torch.isnan(o2[2:, 1]).all() and not torch.isnan(o2[:, 0]).any()


@pytest.mark.parametrize("B_,H_,proj", [(1, 256, 0), (3, 200, 0), (33, 100, 0), (2, 260, 70),
                                        (16, 130, 67)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_nn_lstm_at_threaded_sizes(B_, H_, proj, bidirectional):
    """Sizes where the time loop runs on a team of threads (slices of hidden units with
    SIMD tails), batches of 1-4 on the dot-product loop, and packed weights."""
    kw = dict(input_size=9, hidden_size=H_, proj_size=proj, bidirectional=bidirectional,
              num_layers=2, dtype=torch.float64)
    ref, ours = twin_lstms(**kw)
    x = randn(70, B_, 9, requires_grad=True)
    (o1, (h1, c1)), (o2, (h2, c2)) = ref(x), ours(x)
    for a, e in ((o2, o1), (h2, h1), (c2, c1)):
        assert_close(a, e, torch.float64)
    g = randn(*o1.shape)
    g1 = torch.autograd.grad((o1 * g).sum() + c1.sum(), [x] + list(ref.parameters()))
    g2 = torch.autograd.grad((o2 * g).sum() + c2.sum(), [x] + list(ours.parameters()))
    for a, e in zip(g2, g1):
        assert_close(a, e, torch.float64)
    with torch.no_grad():  # the inference op at the same sizes
        assert_close(ours(x)[0], o1.detach(), torch.float64)
    lengths = torch.randint(1, 71, (B_,))
    lengths[0] = 70
    packed = torch.nn.utils.rnn.pack_padded_sequence(x.detach().float().double(), lengths,
                                                     enforce_sorted=False)
    assert_close(ours(packed)[0].data, ref(packed)[0].data, torch.float64)


@pytest.mark.parametrize("B_,H_", [(1, 256), (32, 256)])
def test_float32_matches_nn_lstm_at_threaded_sizes(B_, H_):
    ref, ours = twin_lstms(input_size=64, hidden_size=H_)
    x = randn(100, B_, 64, dtype=torch.float32, requires_grad=True)
    o1, _ = ref(x)
    o2, _ = ours(x)
    torch.testing.assert_close(o2, o1, rtol=1e-4, atol=2e-5)
    g1, = torch.autograd.grad(o1.sum(), x)
    g2, = torch.autograd.grad(o2.sum(), x)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-4)
