"""Against real Keras 3 (torch backend): the activations' definitions and the LSTM layer
(same weights: kernel = weight_ih.T, recurrent_kernel = weight_hh.T,
bias = bias_ih + bias_hh; gate order i, f, c, o in both)."""
import itertools
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import torchlstm  # noqa: E402
from torchlstm import activations  # noqa: E402

B, T, I, H = 3, 7, 5, 6


def to_torch(t):
    """A Keras (torch backend) result as a plain CPU tensor."""
    return torch.as_tensor(t).detach().cpu()


def test_keras_backend_is_torch():
    assert keras.backend.backend() == "torch"


@pytest.mark.parametrize("name", activations.names())
def test_activation_matches_keras(name):
    x = np.linspace(-6.0, 6.0, 1201)  # float64, crosses every kink and saturation
    want = keras.activations.get(name)(keras.ops.convert_to_tensor(x, dtype="float64"))
    got = activations.reference(name)(torch.from_numpy(x))
    torch.testing.assert_close(got, to_torch(want), rtol=1e-6, atol=1e-6)


def test_non_elementwise_keras_activations_are_refused():
    for name in activations.NOT_ELEMENTWISE:
        assert hasattr(keras.activations, name)  # a real Keras activation
        with pytest.raises(ValueError, match="not element-wise"):
            activations.resolve(name)


def keras_lstm_like(ours, batch=None, **kw):
    layer = keras.layers.LSTM(ours.hidden_size, activation=ours.activation,
                              recurrent_activation=ours.recurrent_activation, **kw)
    layer.build((batch, None, ours.input_size))
    b = (ours.bias_ih_l0 + ours.bias_hh_l0).detach().numpy()
    layer.set_weights([ours.weight_ih_l0.detach().numpy().T,
                       ours.weight_hh_l0.detach().numpy().T, b])
    return layer


PAIRS = [("tanh", "sigmoid"), ("tanh", "hard_sigmoid"), ("relu", "sigmoid"),
         ("gelu", "hard_silu"), ("softsign", "sparse_sigmoid"), ("mish", "sigmoid"),
         ("elu", "hard_tanh"), ("swish", "log_sigmoid")]


@pytest.mark.parametrize("act,ract", PAIRS)
def test_lstm_matches_keras_layer(act, ract):
    torch.manual_seed(0)
    ours = torchlstm.LSTM(I, H, batch_first=True, activation=act, recurrent_activation=ract,
                          return_sequences=True, return_state=True)
    layer = keras_lstm_like(ours, return_sequences=True, return_state=True)
    x = np.random.RandomState(0).randn(B, T, I).astype(np.float32)
    k_seq, k_h, k_c = [to_torch(t) for t in layer(x)]
    seq, h, c = ours(torch.from_numpy(x))
    for a, e in ((seq, k_seq), (h, k_h), (c, k_c)):
        assert a.shape == e.shape
        torch.testing.assert_close(a.detach(), e, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("return_sequences,return_state",
                         list(itertools.product([False, True], [False, True])))
def test_keras_output_contract(return_sequences, return_state):
    torch.manual_seed(1)
    ours = torchlstm.LSTM(I, H, batch_first=True, return_sequences=return_sequences,
                          return_state=return_state)
    layer = keras_lstm_like(ours, return_sequences=return_sequences, return_state=return_state)
    x = np.random.RandomState(1).randn(B, T, I).astype(np.float32)
    want = layer(x)
    got = ours(torch.from_numpy(x))
    want = want if isinstance(want, (list, tuple)) else [want]
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(want)
    for a, e in zip(got, want):
        e = to_torch(e)
        assert a.shape == e.shape
        torch.testing.assert_close(a.detach(), e, rtol=2e-5, atol=2e-5)


def test_input_gradient_matches_keras():
    torch.manual_seed(2)
    ours = torchlstm.LSTM(I, H, batch_first=True, recurrent_activation="hard_sigmoid",
                          return_sequences=True)
    layer = keras_lstm_like(ours, return_sequences=True)
    x = torch.randn(B, T, I)
    xk = x.clone().requires_grad_(True)
    layer(xk).pow(2).sum().backward()
    xo = x.clone().requires_grad_(True)
    ours(xo).pow(2).sum().backward()
    torch.testing.assert_close(xo.grad, xk.grad, rtol=1e-4, atol=1e-5)


def make_mask(kind):
    m = np.ones((B, T), dtype=bool)
    if kind == "right":
        m[0, 5:] = False
        m[1, 2:] = False
    elif kind == "left":
        m[0, :3] = False
        m[2, :1] = False
    elif kind == "holes":
        m[0, [1, 4]] = False
        m[1, 0] = False
        m[2, 3:5] = False
    return m


@pytest.mark.parametrize("kind", ["right", "left", "holes"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_mask_and_go_backwards_match_keras(kind, go_backwards, return_sequences,
                                           zero_output_for_mask):
    torch.manual_seed(3)
    ours = torchlstm.LSTM(I, H, batch_first=True, return_sequences=return_sequences,
                          return_state=True, go_backwards=go_backwards,
                          zero_output_for_mask=zero_output_for_mask)
    layer = keras_lstm_like(ours, return_sequences=return_sequences, return_state=True,
                            go_backwards=go_backwards, zero_output_for_mask=zero_output_for_mask)
    x = np.random.RandomState(3).randn(B, T, I).astype(np.float32)
    mask = make_mask(kind)
    want = [to_torch(t) for t in layer(x, mask=mask)]
    got = ours(torch.from_numpy(x), mask=torch.from_numpy(mask))
    for a, e in zip(got, want):
        assert a.shape == e.shape
        torch.testing.assert_close(a.detach(), e, rtol=2e-5, atol=2e-5)
    # RNN(LSTMCell) with the same weights and options says the same
    cell = torchlstm.LSTMCell(I, H)
    with torch.no_grad():
        cell.weight_ih.copy_(ours.weight_ih_l0)
        cell.weight_hh.copy_(ours.weight_hh_l0)
        cell.bias_ih.copy_(ours.bias_ih_l0)
        cell.bias_hh.copy_(ours.bias_hh_l0)
    rnn = torchlstm.RNN(cell, return_sequences=return_sequences, return_state=True,
                        go_backwards=go_backwards, zero_output_for_mask=zero_output_for_mask)
    for a, e in zip(rnn(torch.from_numpy(x), mask=torch.from_numpy(mask)), got):
        assert torch.equal(a, e)


def test_masked_gradients_match_keras():
    torch.manual_seed(4)
    ours = torchlstm.LSTM(I, H, batch_first=True, return_sequences=True)
    layer = keras_lstm_like(ours, return_sequences=True)
    mask = make_mask("holes")
    x = torch.randn(B, T, I)
    xk = x.clone().requires_grad_(True)
    layer(xk, mask=mask).pow(2).sum().backward()
    xo = x.clone().requires_grad_(True)
    ours(xo, mask=torch.from_numpy(mask)).pow(2).sum().backward()
    torch.testing.assert_close(xo.grad, xk.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["left", "holes"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_mask_matches_keras(kind, return_sequences):
    torch.manual_seed(5)
    # Keras' Bidirectional forces zero_output_for_mask = return_sequences on both layers
    ours = torchlstm.LSTM(I, H, batch_first=True, bidirectional=True,
                          return_sequences=return_sequences,
                          zero_output_for_mask=return_sequences)
    bi = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=return_sequences))
    bi.build((None, None, I))
    for sub, sfx in ((bi.forward_layer, ""), (bi.backward_layer, "_reverse")):
        p = {n: getattr(ours, f"{n}_l0{sfx}").detach().numpy()
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        sub.set_weights([p["weight_ih"].T, p["weight_hh"].T, p["bias_ih"] + p["bias_hh"]])
    x = np.random.RandomState(5).randn(B, T, I).astype(np.float32)
    mask = make_mask(kind)
    want = to_torch(bi(x, mask=mask))
    got = ours(torch.from_numpy(x), mask=torch.from_numpy(mask))
    assert got.shape == want.shape
    torch.testing.assert_close(got.detach(), want, rtol=2e-5, atol=2e-5)


def test_mask_errors():
    m = torchlstm.LSTM(I, H, batch_first=True)
    x = torch.randn(B, T, I)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, seq_len\)"):
        m(x, mask=torch.ones(T, B, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool tensor"):
        m(x, mask=torch.ones(B, T))
    from torch.nn.utils.rnn import pack_padded_sequence
    packed = pack_padded_sequence(torch.randn(T, B, I), torch.tensor([7, 5, 2]))
    with pytest.raises(ValueError, match="PackedSequence"):
        torchlstm.LSTM(I, H)(packed, mask=torch.ones(T, B, dtype=torch.bool))
    with pytest.raises(TypeError, match="go_backwards"):
        torchlstm.LSTM(I, H, go_backwards=1)


def test_unbatched_mask_equals_batched():
    torch.manual_seed(6)
    m = torchlstm.LSTM(I, H, return_state=True, return_sequences=True, dtype=torch.float64)
    x = torch.randn(T, I, dtype=torch.float64)
    mask = torch.tensor([True, False, True, True, False, False, True])
    got = m(x, mask=mask)
    want = m(x.unsqueeze(1), mask=mask.unsqueeze(1))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e.squeeze(1) if e.dim() == 3 else e.squeeze(0))


def test_stateful_matches_keras_across_calls_and_reset():
    torch.manual_seed(7)
    ours = torchlstm.LSTM(I, H, batch_first=True, return_sequences=True, stateful=True)
    layer = keras_lstm_like(ours, batch=B, return_sequences=True, stateful=True)
    rs = np.random.RandomState(7)
    chunks = [rs.randn(B, T, I).astype(np.float32) for _ in range(3)]
    for i, x in enumerate(chunks):
        if i == 2:
            ours.reset_states()
            layer.reset_states()
        want = to_torch(layer(x))
        got = ours(torch.from_numpy(x))
        torch.testing.assert_close(got.detach(), want, rtol=2e-5, atol=2e-5)
    # the same as one call over the concatenated first two chunks, without state
    ours.reset_states()
    whole = torchlstm.LSTM(I, H, batch_first=True, return_sequences=True)
    whole.load_state_dict(ours.state_dict())
    both = whole(torch.from_numpy(np.concatenate(chunks[:2], axis=1)))
    first, second = ours(torch.from_numpy(chunks[0])), ours(torch.from_numpy(chunks[1]))
    torch.testing.assert_close(torch.cat([first, second], dim=1), both)
    assert second.grad_fn is not None and ours._state[0].grad_fn is None  # detached
    with pytest.raises(ValueError, match="reset_states"):
        ours(torch.randn(B + 1, T, I))


def test_stateful_rnn_equals_stateful_lstm():
    torch.manual_seed(8)
    cell = torchlstm.LSTMCell(I, H)
    rnn = torchlstm.RNN(cell, return_sequences=True, stateful=True)
    lstm = torchlstm.LSTM(I, H, batch_first=True, return_sequences=True, stateful=True)
    with torch.no_grad():
        for a, b in (("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"),
                     ("bias_ih", "bias_ih_l0"), ("bias_hh", "bias_hh_l0")):
            getattr(lstm, b).copy_(getattr(cell, a))
    for _ in range(3):
        x = torch.randn(B, T, I)
        assert torch.equal(rnn(x), lstm(x))
    rnn.reset_states()
    lstm.reset_states()
    x = torch.randn(B, T, I)
    assert torch.equal(rnn(x), lstm(x))


def test_weights_both_ways_with_keras_arrays():
    layer = keras.layers.LSTM(H, return_sequences=True, recurrent_activation="hard_sigmoid")
    layer.build((None, None, I))
    ours = torchlstm.LSTM(I, H, batch_first=True, return_sequences=True,
                          recurrent_activation="hard_sigmoid")
    torchlstm.keras_weights.set(ours, layer.get_weights())  # Keras -> torchlstm
    x = np.random.RandomState(9).randn(B, T, I).astype(np.float32)
    torch.testing.assert_close(ours(torch.from_numpy(x)).detach(), to_torch(layer(x)),
                               rtol=2e-5, atol=2e-5)
    torch.manual_seed(9)
    other = torchlstm.LSTM(I, H, batch_first=True, return_sequences=True,
                           recurrent_activation="hard_sigmoid")
    layer.set_weights(torchlstm.keras_weights.get(other))  # torchlstm -> Keras
    torch.testing.assert_close(other(torch.from_numpy(x)).detach(), to_torch(layer(x)),
                               rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="expected 3 Keras arrays"):
        torchlstm.keras_weights.set(ours, layer.get_weights()[:2])
    with pytest.raises(ValueError, match="recurrent_kernel"):
        torchlstm.keras_weights.set(ours, [layer.get_weights()[0], np.zeros((H + 1, 4 * H)),
                                           layer.get_weights()[2]])


def test_weights_from_keras_h5_file_stacked_and_bidirectional(tmp_path):
    model = keras.Sequential([keras.Input((None, I)),
                              keras.layers.LSTM(H, return_sequences=True),
                              keras.layers.LSTM(H, return_sequences=True)])
    path = str(tmp_path / "stacked.weights.h5")
    model.save_weights(path)
    ours = torchlstm.LSTM(I, H, num_layers=2, batch_first=True, return_sequences=True)
    torchlstm.keras_weights.load_h5(ours, path)
    x = np.random.RandomState(10).randn(B, T, I).astype(np.float32)
    torch.testing.assert_close(ours(torch.from_numpy(x)).detach(), to_torch(model(x)),
                               rtol=2e-5, atol=2e-5)

    bi = keras.Sequential([keras.Input((None, I)),
                           keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))])
    path = str(tmp_path / "bi.weights.h5")
    bi.save_weights(path)
    ours = torchlstm.LSTM(I, H, bidirectional=True, batch_first=True, return_sequences=True)
    torchlstm.keras_weights.load_h5(ours, path, "layers/bidirectional")
    torch.testing.assert_close(ours(torch.from_numpy(x)).detach(), to_torch(bi(x)),
                               rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="no Keras LSTM weights under"):
        torchlstm.keras_weights.load_h5(ours, path, "layers/nothing")


def test_keras_init_and_unit_forget_bias():
    m = torchlstm.LSTM(I, 8, num_layers=2, init="keras", unit_forget_bias=True)
    for layer in range(2):
        w_hh = m.get_parameter(f"weight_hh_l{layer}")
        torch.testing.assert_close(w_hh.t() @ w_hh, torch.eye(8), atol=1e-5, rtol=0)  # orthogonal
        b = m.get_parameter(f"bias_ih_l{layer}") + m.get_parameter(f"bias_hh_l{layer}")
        assert torch.equal(b, torch.cat([torch.zeros(8), torch.ones(8), torch.zeros(16)]))
        w_ih = m.get_parameter(f"weight_ih_l{layer}")
        limit = (6 / (w_ih.shape[0] + w_ih.shape[1])) ** 0.5  # glorot_uniform
        assert w_ih.abs().max() <= limit and w_ih.abs().max() > 0.8 * limit
    # the default stays nn.LSTM's; unit_forget_bias alone only sets the forget bias
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, 8)
    torch.manual_seed(0)
    ours = torchlstm.LSTM(I, 8, unit_forget_bias=True)
    assert torch.equal(ours.weight_hh_l0, ref.weight_hh_l0)
    assert torch.equal((ours.bias_ih_l0 + ours.bias_hh_l0)[8:16], torch.ones(8))
    cell = torchlstm.LSTMCell(I, 8, init="keras", unit_forget_bias=True)
    assert torch.equal((cell.bias_ih + cell.bias_hh)[8:16], torch.ones(8))
    with pytest.raises(ValueError, match="init must be one of"):
        torchlstm.LSTM(I, 8, init="xavier")
