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


def keras_lstm_like(ours, **kw):
    layer = keras.layers.LSTM(ours.hidden_size, activation=ours.activation,
                              recurrent_activation=ours.recurrent_activation, **kw)
    layer.build((None, None, ours.input_size))
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
