"""LSTMCell vs nn.LSTMCell, RNN(LSTMCell) == LSTM, and the Keras output contract."""
import itertools

import pytest
import torch

import torchlstm
from support import assert_close, assert_same_lstm, lstm_layer, randn

I, H, T, B = 5, 6, 7, 3


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cell_matches_nn_lstmcell(bias, batched, dtype):
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(I, H, bias=bias, dtype=dtype)
    torch.manual_seed(0)
    ours = torchlstm.LSTMCell(I, H, bias=bias, dtype=dtype)
    assert list(ref.state_dict()) == list(ours.state_dict())
    for p1, p2 in zip(ref.parameters(), ours.parameters()):
        assert torch.equal(p1, p2)
    shape = (B, I) if batched else (I,)
    x = randn(*shape, dtype=dtype, requires_grad=True)
    hx = (randn(*shape[:-1], H, dtype=dtype, requires_grad=True),
          randn(*shape[:-1], H, dtype=dtype, requires_grad=True))
    for state in (None, hx):
        (h1, c1), (h2, c2) = ref(x, state), ours(x, state)
        assert h2.shape == h1.shape
        assert_close(h2, h1, dtype)
        assert_close(c2, c1, dtype)
        wrt = [x] + (list(hx) if state else []) + list(ref.parameters())
        g1 = torch.autograd.grad((h1 * 1.5 + c1 * c1).sum(), wrt)
        wrt = [x] + (list(hx) if state else []) + list(ours.parameters())
        g2 = torch.autograd.grad((h2 * 1.5 + c2 * c2).sum(), wrt)
        for a, e in zip(g2, g1):
            assert_close(a, e, dtype)
    assert repr(ours) == repr(ref).replace("LSTMCell", "LSTMCell")


def test_cell_activation_matches_reference():
    cell = torchlstm.LSTMCell(I, H, recurrent_activation="hard_sigmoid", activation="relu",
                              dtype=torch.float64)
    x, h, c = randn(B, I), randn(B, H), randn(B, H)
    got = cell(x, (h, c))
    want = lstm_layer(x[None], h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                      activation="relu", recurrent_activation="hard_sigmoid")[1:]
    for a, e in zip(got, want):
        assert_close(a, e, torch.float64)


def copy_cell_into_lstm(cell, lstm):
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(cell.weight_ih)
        lstm.weight_hh_l0.copy_(cell.weight_hh)
        if cell.bias:
            lstm.bias_ih_l0.copy_(cell.bias_ih)
            lstm.bias_hh_l0.copy_(cell.bias_hh)


@pytest.mark.parametrize("return_sequences,return_state,bias,batched,act",
                         list(itertools.product([False, True], [False, True], [True, False],
                                                [True, False], ["tanh", "relu"])))
def test_rnn_of_cell_equals_lstm(return_sequences, return_state, bias, batched, act):
    cell = torchlstm.LSTMCell(I, H, bias=bias, activation=act,
                              recurrent_activation="hard_sigmoid", dtype=torch.float64)
    rnn = torchlstm.RNN(cell, return_sequences=return_sequences, return_state=return_state)
    lstm = torchlstm.LSTM(I, H, bias=bias, batch_first=True, activation=act,
                          recurrent_activation="hard_sigmoid", return_sequences=return_sequences,
                          return_state=return_state, dtype=torch.float64)
    copy_cell_into_lstm(cell, lstm)
    x = randn(*((B, T, I) if batched else (T, I)), requires_grad=True)
    state = (randn(*((B, H) if batched else (H,))), randn(*((B, H) if batched else (H,))))
    for init in (None, state):
        got = rnn(x, init)
        want = lstm(x, None if init is None else tuple(s.unsqueeze(0) for s in init))
        got, want = (got, want) if return_state else ((got,), (want,))
        assert len(got) == len(want)
        for a, e in zip(got, want):
            assert a.shape == e.shape
            assert torch.equal(a, e), "RNN(cell) must be exactly LSTM"
        ga = torch.autograd.grad(sum(t.sum() for t in got), x)[0]
        ge = torch.autograd.grad(sum(t.sum() for t in want), x)[0]
        assert torch.equal(ga, ge)


def test_rnn_steps_equal_cell_loop():
    """The fused sequence op computes what calling the cell step by step computes."""
    cell = torchlstm.LSTMCell(I, H, dtype=torch.float64)
    x = randn(B, T, I)
    seq = torchlstm.RNN(cell, return_sequences=True)(x)
    h = c = torch.zeros(B, H, dtype=torch.float64)
    for t in range(T):
        h, c = cell(x[:, t], (h, c))
        assert_close(seq[:, t], h, torch.float64)


@pytest.mark.parametrize("num_layers,bidirectional,proj_size,batch_first,batched",
                         list(itertools.product([1, 2], [False, True], [0, 2], [False, True],
                                                [True, False])))
@pytest.mark.parametrize("return_sequences,return_state",
                         [(True, None), (False, None), (None, True), (True, True), (False, True)])
def test_keras_contract_shapes(num_layers, bidirectional, proj_size, batch_first, batched,
                               return_sequences, return_state):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, proj_size=proj_size,
              batch_first=batch_first, dtype=torch.float64)
    plain = torchlstm.LSTM(I, H, **kw)
    keras = torchlstm.LSTM(I, H, return_sequences=return_sequences, return_state=return_state,
                           **kw)
    keras.load_state_dict(plain.state_dict())
    D, Hout = (2 if bidirectional else 1), (proj_size or H)
    x = randn(*((B, T, I) if batch_first else (T, B, I))) if batched else randn(T, I)
    out, (h_n, c_n) = plain(x)
    res = keras(x)
    output = res[0] if return_state else res
    bshape = (B,) if batched else ()
    if return_sequences:
        assert torch.equal(output, out)
    else:
        assert output.shape == bshape + (D * Hout,)
        # the last step of the forward direction; the backward direction's final state
        seq = out if not batched else (out if batch_first else out.transpose(0, 1))
        last_fwd = seq[..., -1, :Hout] if batched else seq[-1, :Hout]
        assert torch.equal(output[..., :Hout], last_fwd)
        if bidirectional:
            first_bwd = seq[..., 0, Hout:] if batched else seq[0, Hout:]
            assert torch.equal(output[..., Hout:], first_bwd)
    if return_state:
        _, h, c = res
        if num_layers * D == 1:
            assert h.shape == bshape + (Hout,) and c.shape == bshape + (H,)
            assert torch.equal(h, h_n[0]) and torch.equal(c, c_n[0])
        else:
            assert torch.equal(h, h_n) and torch.equal(c, c_n)
    else:
        assert isinstance(res, torch.Tensor)


def test_keras_last_output_with_packed_sequence():
    from torch.nn.utils.rnn import pack_padded_sequence
    lstm = torchlstm.LSTM(I, H, bidirectional=True, return_state=True, dtype=torch.float64)
    lengths = torch.tensor([2, 7, 4])
    packed = pack_padded_sequence(randn(T, 3, I), lengths, enforce_sorted=False)
    out, h, c = lstm(packed)
    assert out.shape == (3, 2 * H) and h.shape == (2, 3, H)
    assert torch.equal(out, torch.cat([h[0], h[1]], dim=-1))


@pytest.mark.parametrize("kw", [dict(num_layers=2, bidirectional=True),
                                dict(proj_size=3, batch_first=True)])
@pytest.mark.parametrize("masked", [False, True])
def test_callable_activation_runs_unfused_and_matches_fused(kw, masked):
    """A Python callable runs the unfused path: same numbers and gradients as the fused
    kernel for the same function, and a warning saying so."""
    torch.manual_seed(0)
    fused = torchlstm.LSTM(I, H, activation="gelu", recurrent_activation="hard_sigmoid",
                           dtype=torch.float64, **kw)
    with pytest.warns(UserWarning, match="unfused"):
        unfused = torchlstm.LSTM(I, H, recurrent_activation="hard_sigmoid", dtype=torch.float64,
                                 activation=lambda x: torch.nn.functional.gelu(x), **kw)
    unfused.load_state_dict(fused.state_dict())
    x = randn(B, T, I, requires_grad=True) if kw.get("batch_first") else randn(T, B, I, requires_grad=True)
    mask = None
    if masked:
        mask = torch.rand(x.shape[:2]) > 0.3
    assert_same_lstm(fused, unfused, x, mask=mask)


def test_callable_activation_cell_and_rnn():
    with pytest.warns(UserWarning, match="unfused"):
        cell = torchlstm.LSTMCell(I, H, recurrent_activation=lambda x: torch.sigmoid(x),
                                  dtype=torch.float64)
    ref = torchlstm.LSTMCell(I, H, dtype=torch.float64)
    ref.load_state_dict(cell.state_dict())
    x = randn(B, I)
    for a, e in zip(cell(x), ref(x)):
        assert_close(a, e, torch.float64)
    seq = randn(B, T, I)
    assert_close(torchlstm.RNN(cell, return_sequences=True)(seq),
                 torchlstm.RNN(ref, return_sequences=True)(seq), torch.float64)
