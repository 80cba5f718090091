"""torchlstm.keras against keras.layers.LSTM itself (Keras 3, torch backend): the same
weights (set_weights(get_weights())) give the same predictions for each option, the same
weights after model.fit, the same masking from each source, Bidirectional, functional and
Sequential models, save / load of .keras and .weights.h5 files both ways, and
RNN(LSTMCell(n)) = LSTM(n); every call through the fused op."""
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import torchlstm.keras as tk  # noqa: E402

B, T, I, U = 4, 9, 5, 6
RTOL = ATOL = 2e-5


def data(seed=0, b=B, t=T, i=I):
    return np.random.RandomState(seed).randn(b, t, i).astype(np.float32)


def np_(t):
    return keras.ops.convert_to_numpy(t)


def assert_same(got, want, rtol=RTOL, atol=ATOL):
    got, want = keras.tree.flatten(got), keras.tree.flatten(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np_(g), np_(w)
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the fused op calls (torchlstm.keras.run_layer) and fails a test in which
    Keras' own step loop ran for one of torchlstm's layers."""
    calls = []
    real = tk.run_layer

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(tk, "run_layer", counting)
    keras_loop = keras.layers.RNN.inner_loop

    def refuse(self, *args, **kwargs):
        if isinstance(self, (tk.LSTM, tk.RNN)):
            raise AssertionError(f"{self.name} ran Keras' loop, not the fused op")
        return keras_loop(self, *args, **kwargs)
    monkeypatch.setattr(keras.layers.RNN, "inner_loop", refuse)
    return calls


def pair(input_shape=(None, None, I), units=U, **kw):
    """(keras.layers.LSTM, torchlstm.keras.LSTM), built, with the same weights."""
    ref, ours = keras.layers.LSTM(units, **kw), tk.LSTM(units, **kw)
    ref.build(input_shape)
    ours.build(input_shape)
    ours.set_weights(ref.get_weights())
    return ref, ours


# ------------------------------------------------------------------ the layer itself
def test_is_keras_layer_and_weights_are_keras():
    ref, ours = pair()
    assert isinstance(ours, keras.layers.LSTM) and isinstance(ours, keras.layers.Layer)
    assert [w.path.split("/", 1)[1] for w in ours.weights] == \
        [w.path.split("/", 1)[1] for w in ref.weights] == \
        ["lstm_cell/kernel", "lstm_cell/recurrent_kernel", "lstm_cell/bias"]
    assert [tuple(w.shape) for w in ours.weights] == [(I, 4 * U), (U, 4 * U), (4 * U,)]
    assert isinstance(ours.cell.kernel.value, torch.nn.Parameter)


def test_default_initialisation_is_keras():
    keras.utils.set_random_seed(3)
    ref = keras.layers.LSTM(U)
    ref.build((None, None, I))
    keras.utils.set_random_seed(3)
    ours = tk.LSTM(U)
    ours.build((None, None, I))
    for a, b in zip(ours.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)
    bias = ours.get_weights()[2]  # unit_forget_bias: ones for the forget gate
    np.testing.assert_array_equal(bias, np.r_[np.zeros(U), np.ones(U), np.zeros(2 * U)])


def test_config_is_keras_lstm_config():
    kw = dict(activation="relu", recurrent_activation="hard_sigmoid", use_bias=True,
              kernel_regularizer="l2", recurrent_constraint="non_neg", dropout=0.1,
              recurrent_dropout=0.2, seed=5, return_sequences=True, return_state=True,
              go_backwards=True, unroll=True, unit_forget_bias=False, use_cudnn=False)
    ref, ours = keras.layers.LSTM(U, name="x", **kw), tk.LSTM(U, name="x", **kw)
    assert ours.get_config() == ref.get_config()
    again = tk.LSTM.from_config(ours.get_config())
    assert type(again) is tk.LSTM and again.get_config() == ours.get_config()
    assert "use_cudnn" not in ours.get_config()  # as Keras' LSTM


OPTIONS = [
    {},
    dict(return_sequences=True),
    dict(return_state=True),
    dict(return_sequences=True, return_state=True),
    dict(go_backwards=True),
    dict(go_backwards=True, return_sequences=True, return_state=True),
    dict(activation="relu", recurrent_activation="hard_sigmoid", return_sequences=True),
    dict(activation="gelu", recurrent_activation="hard_silu"),
    dict(activation=None, recurrent_activation="sigmoid", return_sequences=True),
    dict(use_bias=False, return_sequences=True),
    dict(unit_forget_bias=False, bias_initializer="random_normal"),
    dict(kernel_initializer="he_normal", recurrent_initializer="glorot_uniform"),
    dict(dropout=0.3, recurrent_dropout=0.4, seed=1, return_sequences=True),  # inference
    dict(unroll=True, return_sequences=True),
    dict(use_cudnn=False),
    dict(activation=torch.tanh, recurrent_activation=torch.sigmoid),  # torch functions
]


@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: ",".join(kw) or "default")
def test_prediction_matches_keras(kw, fused_calls):
    ref, ours = pair((None, T, I), **kw)
    x = data(1)
    assert_same(ours(x), ref(x))
    model_r = keras.Sequential([keras.Input((T, I)), ref])
    model_o = keras.Sequential([keras.Input((T, I)), ours])
    if not kw.get("return_state"):
        assert_same(model_o.predict(x, verbose=0), model_r.predict(x, verbose=0))
    assert fused_calls


def test_initial_state_matches_keras(fused_calls):
    ref, ours = pair(return_sequences=True, return_state=True)
    x = data(2)
    rs = np.random.RandomState(2)
    h0, c0 = rs.randn(B, U).astype(np.float32), rs.randn(B, U).astype(np.float32)
    assert_same(ours(x, initial_state=[h0, c0]), ref(x, initial_state=[h0, c0]))


def test_float64_and_batch_of_one(fused_calls):
    ref, ours = pair(dtype="float64", return_sequences=True)
    x = data(3).astype(np.float64)
    assert_same(ours(x), ref(x), rtol=1e-10, atol=1e-10)
    assert np_(ours(x)).dtype == np.float64
    assert_same(ours(x[:1]), ref(x[:1]), rtol=1e-10, atol=1e-10)


def test_gradients_match_keras(fused_calls):
    ref, ours = pair(return_sequences=True)
    x = torch.from_numpy(data(4))
    grads = []
    for layer in (ref, ours):
        xi = x.clone().requires_grad_(True)
        layer(xi).pow(2).sum().backward()
        grads.append([xi.grad] + [w.value.grad.clone() for w in layer.trainable_weights])
        for w in layer.trainable_weights:
            w.value.grad = None
    for g, w in zip(grads[1], grads[0]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_custom_activation_runs_keras_loop_with_a_warning():
    def act(x):
        return keras.ops.tanh(x) * 0.5
    ref, ours = pair(activation=act, return_sequences=True)
    x = data(5)
    with pytest.warns(UserWarning, match="Keras' own"):
        got = ours(x)
    assert_same(got, ref(x))


def test_dropout_training_uses_keras_mask(fused_calls):
    """dropout alone: the very mask Keras' cell draws (same seed, same numbers)."""
    ref, ours = pair(dropout=0.4, seed=11, return_sequences=True)
    x = data(6)
    got, want = ours(x, training=True), ref(x, training=True)
    assert_same(got, want)
    assert not np.allclose(np_(got), np_(ours(x, training=False)))


def test_recurrent_dropout_training_is_seeded(fused_calls):
    """recurrent_dropout: one mask per call shared by the gates; same seed, same result."""
    x = data(7)
    outs = []
    for _ in range(2):
        keras.utils.set_random_seed(5)
        _, ours = pair(dropout=0.2, recurrent_dropout=0.3, seed=4, return_sequences=True)
        outs.append(np_(ours(x, training=True)))
        assert not np.allclose(outs[-1], np_(ours(x, training=False)))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_stateful_and_reset_state_match_keras(fused_calls):
    ref, ours = pair((B, T, I), stateful=True, return_sequences=True)
    x1, x2 = data(8), data(9)
    for x in (x1, x2):
        assert_same(ours(x), ref(x))
    first = np_(ours(x1))
    ours.reset_state()
    ref.reset_state()
    assert_same(ours(x1), ref(x1))
    assert not np.allclose(first, np_(ours(x1)))  # the carried state mattered
    with pytest.raises(ValueError, match="batch size"):
        ours(data(8, b=B + 1))


def test_stateful_fit_matches_keras(fused_calls):
    """The carried state is a Keras variable assigned after each batch: training through
    it (backward after the assignment) works, with Keras' weights. (keras.layers.LSTM
    itself fails here on the CPU, Keras 3.15: its fast torch path saves the state variable
    for backward and the assignment then modifies it in place; Keras' generic loop,
    RNN(LSTMCell), copies it and is the reference.)"""
    x = data(34, b=2 * B)
    y = np.random.RandomState(35).randn(2 * B, 3).astype(np.float32)
    model_r, model_o = [keras.Sequential([keras.Input(batch_shape=(B, T, I)), layer,
                                          keras.layers.Dense(3)])
                        for layer in (keras.layers.RNN(keras.layers.LSTMCell(U), stateful=True),
                                      tk.LSTM(U, stateful=True))]
    model_o.set_weights(model_r.get_weights())
    for m in (model_r, model_o):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        m.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model_o.get_weights(), model_r.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert_same(model_o.layers[0].states, model_r.layers[0].states, 1e-4, 1e-5)


def test_regularizer_losses_match_keras():
    kw = dict(kernel_regularizer="l2", recurrent_regularizer="l1", bias_regularizer=keras.regularizers.L1L2(0.01, 0.02),
              activity_regularizer="l2")
    ref, ours = pair(**kw)
    x = data(10)
    ref(x), ours(x)
    assert len(ours.losses) == len(ref.losses) == 4
    for a, b in zip(ours.losses, ref.losses):
        np.testing.assert_allclose(np_(a), np_(b), rtol=1e-5)


# ------------------------------------------------------------------ training
def models(make_layer_r, make_layer_o, x_shape, head=True):
    out = []
    for make in (make_layer_r, make_layer_o):
        layers = [keras.Input(x_shape)] + make() + ([keras.layers.Dense(3)] if head else [])
        out.append(keras.Sequential(layers))
    out[1].set_weights(out[0].get_weights())
    return out


def fit_both(model_r, model_o, x, y, epochs=3, **compile_kw):
    for m in (model_r, model_o):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", **compile_kw)
        m.fit(x, y, batch_size=2, epochs=epochs, shuffle=False, verbose=0)
    for a, b in zip(model_o.get_weights(), model_r.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


FIT_OPTIONS = [
    dict(),
    dict(return_sequences=True, go_backwards=True),
    dict(activation="relu", recurrent_activation="hard_sigmoid", use_bias=False),
    dict(kernel_regularizer="l2", recurrent_constraint=keras.constraints.MaxNorm(0.5)),
    dict(dropout=0.3, seed=2),  # the same dropout masks as Keras
]


@pytest.mark.parametrize("kw", FIT_OPTIONS, ids=lambda kw: ",".join(kw) or "default")
def test_fit_gives_keras_weights(kw, fused_calls):
    x = data(11, b=6)
    y = np.random.RandomState(12).randn(6, *((T, 3) if kw.get("return_sequences") else (3,)))
    model_r, model_o = models(lambda: [keras.layers.LSTM(U, **kw)], lambda: [tk.LSTM(U, **kw)],
                              (T, I))
    fit_both(model_r, model_o, x, y.astype(np.float32))
    assert_same(model_o.predict(x, verbose=0), model_r.predict(x, verbose=0), 1e-4, 1e-5)


def test_fit_stacked_functional_with_mask(fused_calls):
    x = data(13, b=6)
    x[0, 6:] = 0.0
    x[3, :2] = 0.0
    y = np.random.RandomState(14).randn(6, 3).astype(np.float32)

    def build(lstm):
        inp = keras.Input((None, I))
        h = keras.layers.Masking(0.0)(inp)
        h = lstm(U, return_sequences=True)(h)
        h = lstm(U + 1)(h)
        return keras.Model(inp, keras.layers.Dense(3)(h))
    model_r, model_o = build(keras.layers.LSTM), build(tk.LSTM)
    model_o.set_weights(model_r.get_weights())
    fit_both(model_r, model_o, x, y)


def test_mixed_bfloat16_policy_fits_as_keras(fused_calls):
    x = data(30, b=6)
    y = np.random.RandomState(31).randn(6, 3).astype(np.float32)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model_r, model_o = models(lambda: [keras.layers.LSTM(U)], lambda: [tk.LSTM(U)], (T, I),
                                  head=False)
        assert model_o.layers[0].compute_dtype == "bfloat16"
        assert_same(model_o(x), model_r(x), 2e-2, 2e-2)
        for m in (model_r, model_o):
            m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            m.fit(x, y[:, :1].repeat(U, 1), batch_size=2, epochs=2, shuffle=False, verbose=0)
        for a, b in zip(model_o.get_weights(), model_r.get_weights()):
            np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_jit_compile_fit_is_eager_fit(fused_calls):
    """model.compile(jit_compile=True): torch.compile traces the op (its fake kernel)."""
    x = data(32, b=4)
    y = np.random.RandomState(33).randn(4, 3).astype(np.float32)
    eager, jit = models(lambda: [tk.LSTM(U)], lambda: [tk.LSTM(U)], (T, I))
    for m, j in ((eager, False), (jit, True)):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=j)
        m.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(jit.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ masks
def masked_input():
    x = data(15)
    x[0, 5:] = 0.0  # right padding
    x[1, :3] = 0.0  # left padding
    x[2, [2, 6]] = 0.0  # holes
    return x


@pytest.mark.parametrize("kw", [dict(), dict(return_sequences=True),
                                dict(return_sequences=True, return_state=True),
                                dict(go_backwards=True, return_sequences=True),
                                dict(zero_output_for_mask=True, return_sequences=True)],
                         ids=lambda kw: ",".join(kw) or "default")
def test_masking_layer_matches_keras(kw, fused_calls):
    x = masked_input()
    outs = []
    for lstm in (keras.layers.LSTM, tk.LSTM):
        keras.utils.set_random_seed(1)
        inp = keras.Input((T, I))
        y = lstm(U, **kw)(keras.layers.Masking(0.0)(inp))
        outs.append(keras.Model(inp, y))
    assert_same(outs[1](x), outs[0](x))


def test_embedding_mask_zero_and_mask_propagation(fused_calls):
    """Embedding(mask_zero=True) -> LSTM(return_sequences) -> LSTM: the second layer gets
    the mask (compute_mask as Keras')."""
    tokens = np.random.RandomState(16).randint(1, 20, size=(B, T))
    tokens[0, 4:] = 0
    tokens[2, :2] = 0
    outs = []
    for lstm in (keras.layers.LSTM, tk.LSTM):
        keras.utils.set_random_seed(2)
        outs.append(keras.Sequential([keras.Input((T,), dtype="int32"),
                                      keras.layers.Embedding(20, I, mask_zero=True),
                                      lstm(U, return_sequences=True), lstm(U)]))
    assert_same(outs[1](tokens), outs[0](tokens))
    layer = outs[1].layers[1]
    mask = np.ones((B, T), bool)
    assert layer.compute_mask(None, mask) is mask
    assert outs[1].layers[2].compute_mask(None, mask) is None


@pytest.mark.parametrize("dtype", [bool, np.int32, np.float32])
def test_explicit_mask_matches_keras(dtype, fused_calls):
    ref, ours = pair(return_sequences=True, return_state=True)
    x = data(17)
    mask = np.ones((B, T), bool)
    mask[0, 6:] = False
    mask[1, :2] = False
    mask[3, 4] = False
    assert_same(ours(x, mask=mask.astype(dtype)), ref(x, mask=mask.astype(dtype)))
    tmask = torch.from_numpy(mask)
    assert_same(ours(x, mask=tmask), ref(x, mask=tmask))


def test_explicit_mask_functional(fused_calls):
    outs = []
    for lstm in (keras.layers.LSTM, tk.LSTM):
        keras.utils.set_random_seed(3)
        inp, m = keras.Input((T, I)), keras.Input((T,), dtype="bool")
        outs.append(keras.Model([inp, m], lstm(U, return_sequences=True)(inp, mask=m)))
    x, mask = masked_input(), np.random.RandomState(18).rand(B, T) > 0.3
    assert_same(outs[1]([x, mask]), outs[0]([x, mask]))


# ------------------------------------------------------------------ Bidirectional
@pytest.mark.parametrize("kw,merge", [(dict(), "concat"), (dict(return_sequences=True), "sum"),
                                      (dict(return_sequences=True, return_state=True), "concat"),
                                      (dict(return_sequences=True), None)],
                         ids=["last", "seq-sum", "seq-state", "seq-none"])
@pytest.mark.parametrize("masked", [False, True])
def test_bidirectional_matches_keras(kw, merge, masked, fused_calls):
    x = masked_input() if masked else data(19)
    outs = []
    for lstm in (keras.layers.LSTM, tk.LSTM):
        keras.utils.set_random_seed(4)
        inp = keras.Input((T, I))
        h = keras.layers.Masking(0.0)(inp) if masked else inp
        bi = keras.layers.Bidirectional(lstm(U, **kw), merge_mode=merge)
        outs.append(keras.Model(inp, bi(h)))
    assert type(outs[1].layers[-1].forward_layer) is tk.LSTM
    assert type(outs[1].layers[-1].backward_layer) is tk.LSTM
    assert_same(outs[1](x), outs[0](x))


def test_bidirectional_backward_layer_fit_and_save(tmp_path, fused_calls):
    x = data(20, b=6)
    y = np.random.RandomState(21).randn(6, 3).astype(np.float32)
    model_r, model_o = models(
        lambda: [keras.layers.Bidirectional(
            keras.layers.LSTM(U), backward_layer=keras.layers.LSTM(U, go_backwards=True))],
        lambda: [keras.layers.Bidirectional(
            tk.LSTM(U), backward_layer=tk.LSTM(U, go_backwards=True))], (T, I))
    fit_both(model_r, model_o, x, y)
    path = str(tmp_path / "bi.keras")
    model_o.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[0].backward_layer) is tk.LSTM
    assert_same(loaded.predict(x, verbose=0), model_o.predict(x, verbose=0), 0, 0)


# ------------------------------------------------------------------ saving
def named_models(lstm_r=keras.layers.LSTM, lstm_o=tk.LSTM):
    out = []
    for lstm in (lstm_r, lstm_o):
        inp = keras.Input((None, I))
        h = lstm(U, return_sequences=True, name="lstm_a")(inp)
        h = keras.layers.Bidirectional(lstm(U, name="lstm_b"), name="bi")(h)
        out.append(keras.Model(inp, keras.layers.Dense(2, name="head")(h), name="m"))
    return out


def test_save_load_keras_file(tmp_path, fused_calls):
    _, model = named_models()
    x = data(22)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    assert type(loaded.get_layer("lstm_a")) is tk.LSTM
    assert_same(loaded(x), model(x), 0, 0)


def test_load_keras_file_in_fresh_process(tmp_path):
    """A .keras file with torchlstm layers loads in a new process once torchlstm.keras is
    imported (registered as serializable, no custom_objects)."""
    _, model = named_models()
    path, xs = str(tmp_path / "m.keras"), str(tmp_path / "x.npy")
    x = data(23)
    np.save(xs, x)
    model.save(path)
    np.save(str(tmp_path / "y.npy"), np_(model(x)))
    code = ("import numpy as np, keras, torchlstm.keras as tk\n"
            f"m = keras.models.load_model({path!r})\n"
            "assert type(m.get_layer('lstm_a')) is tk.LSTM\n"
            f"y = keras.ops.convert_to_numpy(m(np.load({xs!r})))\n"
            f"np.testing.assert_array_equal(y, np.load({str(tmp_path / 'y.npy')!r}))\n")
    env = dict(os.environ, KERAS_BACKEND="torch")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("direction", ["keras->torchlstm", "torchlstm->keras"])
def test_weights_h5_both_ways(tmp_path, direction, fused_calls):
    ref, ours = named_models()
    src, dst = (ref, ours) if direction == "keras->torchlstm" else (ours, ref)
    path = str(tmp_path / "m.weights.h5")
    src.save_weights(path)
    dst.load_weights(path)
    for a, b in zip(dst.get_weights(), src.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = data(24)
    assert_same(ours(x), ref(x))


def test_keras_file_of_keras_lstm_loads_into_torchlstm_model(tmp_path):
    """A model saved with keras.layers.LSTM: its weights go into the same model built with
    torchlstm.keras.LSTM (load_weights reads .keras files too)."""
    ref, ours = named_models()
    path = str(tmp_path / "ref.keras")
    ref.save(path)
    ours.load_weights(path)
    x = data(25)
    assert_same(ours(x), ref(x))


# ------------------------------------------------------------------ RNN(LSTMCell)
@pytest.mark.parametrize("kw", [dict(), dict(return_sequences=True, return_state=True),
                                dict(go_backwards=True, return_sequences=True)],
                         ids=lambda kw: ",".join(kw) or "default")
@pytest.mark.parametrize("cell", [tk.LSTMCell, keras.layers.LSTMCell])
def test_rnn_of_cell_is_lstm(kw, cell, fused_calls):
    lstm = tk.LSTM(32, **kw)
    rnn = tk.RNN(cell(32), **kw)
    ref = keras.layers.RNN(keras.layers.LSTMCell(32), **kw)
    for layer in (lstm, rnn, ref):
        layer.build((None, None, I))
    rnn.set_weights(lstm.get_weights())
    ref.set_weights(lstm.get_weights())
    x = masked_input()
    mask = x.any(-1)
    for m in (None, mask):
        want = lstm(x, mask=m)
        assert_same(rnn(x, mask=m), want)
        assert_same(ref(x, mask=m), want)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_rnn_cell_fit_and_save(tmp_path, fused_calls):
    x = data(26, b=6)
    y = np.random.RandomState(27).randn(6, 3).astype(np.float32)
    model_r, model_o = models(lambda: [keras.layers.LSTM(U)],
                              lambda: [tk.RNN(tk.LSTMCell(U))], (T, I))
    fit_both(model_r, model_o, x, y)
    path = str(tmp_path / "rnn.keras")
    model_o.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[0]) is tk.RNN and type(loaded.layers[0].cell) is tk.LSTMCell
    assert_same(loaded.predict(x, verbose=0), model_o.predict(x, verbose=0), 0, 0)
    # weight files move to and from keras.layers.RNN(keras.layers.LSTMCell) (Keras names
    # the groups by class: an LSTM's file is not an RNN's, in Keras too)
    (keras_rnn,) = models(lambda: [keras.layers.RNN(keras.layers.LSTMCell(U))],
                          lambda: [tk.RNN(tk.LSTMCell(U))], (T, I))[:1]
    h5 = str(tmp_path / "rnn.weights.h5")
    model_o.save_weights(h5)
    keras_rnn.load_weights(h5)
    for a, b in zip(keras_rnn.get_weights(), model_o.get_weights()):
        np.testing.assert_array_equal(a, b)
    keras_rnn.save_weights(h5)
    loaded.load_weights(h5)
    assert_same(loaded.predict(x, verbose=0), model_r.predict(x, verbose=0), 1e-4, 1e-5)


def test_rnn_other_cell_runs_keras_loop():
    rnn, ref = tk.RNN(keras.layers.GRUCell(U)), keras.layers.RNN(keras.layers.GRUCell(U))
    rnn.build((None, None, I))
    ref.build((None, None, I))
    rnn.set_weights(ref.get_weights())
    x = data(28)
    assert_same(rnn(x), ref(x))


def test_lstm_cell_step_is_keras():
    ref, ours = keras.layers.LSTMCell(U), tk.LSTMCell(U)
    ref.build((None, I))
    ours.build((None, I))
    ours.set_weights(ref.get_weights())
    x = data(29)[:, 0]
    s = [np.zeros((B, U), np.float32)] * 2
    assert_same(ours(x, s), ref(x, s))


# ------------------------------------------------------------------ import and backend
def run_python(code, **env):
    e = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          timeout=300)


def test_importing_torchlstm_does_not_import_keras():
    r = run_python("import sys, torchlstm; assert 'keras' not in sys.modules, 'imported'",
                   KERAS_BACKEND="torch")
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_clear_error_when_backend_is_not_torch(backend):
    r = run_python("import torchlstm.keras", KERAS_BACKEND=backend)
    assert r.returncode != 0
    assert "ImportError: torchlstm.keras needs Keras 3 running on its torch backend" in r.stderr
    assert f"'{backend}'" in r.stderr and "KERAS_BACKEND=torch" in r.stderr
