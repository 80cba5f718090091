"""Bad input: a clear Python exception naming the argument, never a crash or a wrong answer."""
import pytest
import torch

import torchlstm
from torchlstm import activations
from support import op_args

ops = torch.ops.torchlstm


# ----------------------------------------------------------------- constructor (as nn.LSTM)
@pytest.mark.parametrize("kwargs,exc", [
    (dict(input_size=0, hidden_size=4), ValueError),
    (dict(input_size=3, hidden_size=0), ValueError),
    (dict(input_size=3, hidden_size=-2), ValueError),
    (dict(input_size=3.0, hidden_size=4), TypeError),
    (dict(input_size=3, hidden_size="4"), TypeError),
    (dict(input_size=3, hidden_size=4, num_layers=0), ValueError),
    (dict(input_size=3, hidden_size=4, dropout=1.5), ValueError),
    (dict(input_size=3, hidden_size=4, dropout=True), ValueError),
    (dict(input_size=3, hidden_size=4, bias=1), TypeError),
    (dict(input_size=3, hidden_size=4, batch_first="yes"), TypeError),
    (dict(input_size=3, hidden_size=4, proj_size=-1), ValueError),
    (dict(input_size=3, hidden_size=4, proj_size=4), ValueError),
])
def test_constructor_errors_match_nn(kwargs, exc):
    with pytest.raises(exc) as ours:
        torchlstm.LSTM(**kwargs)
    with pytest.raises(exc) as ref:
        torch.nn.LSTM(**kwargs)
    assert str(ours.value) == str(ref.value)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown recurrent_activation 'hardsigmoid'.*hard_sigmoid"):
        torchlstm.LSTM(3, 4, recurrent_activation="hardsigmoid")
    with pytest.raises(ValueError, match="Unknown activation 'swishy'.*tanh"):
        torchlstm.LSTMCell(3, 4, activation="swishy")
    with pytest.raises(TypeError, match="activation"):
        torchlstm.LSTM(3, 4, activation=3)
    with pytest.raises(ValueError, match="not element-wise"):
        torchlstm.LSTM(3, 4, activation="softmax")
    with pytest.raises(TypeError, match="not a fused activation"):
        activations.resolve(lambda x: x * 2)  # the ops take kernel ids only
    with pytest.raises(TypeError, match="return_state"):
        torchlstm.LSTM(3, 4, return_state="yes")


def test_activation_registry():
    assert activations.resolve(None) == activations.FUSED["linear"]
    assert activations.resolve(torch.tanh) == activations.resolve("tanh")
    assert activations.resolve(torch.sigmoid) == activations.resolve("sigmoid")
    assert set(activations.names()) >= {"tanh", "sigmoid", "hard_sigmoid", "relu", "linear",
                                        "gelu", "mish", "swish", "hard_swish", "hard_shrink"}
    assert activations.resolve("swish") == activations.resolve("silu")
    for name in activations.names():
        assert activations.name_of(activations.resolve(name)) == activations.ALIASES.get(name, name)
        x = torch.linspace(-5, 5, 11, dtype=torch.float64)
        activations.reference(name)(x)  # every fused name has a reference
    hs = activations.reference("hard_sigmoid")(torch.tensor([-4.0, -3.0, 0.0, 1.5, 3.0, 9.0]))
    assert torch.equal(hs, torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))  # Keras 3


# ----------------------------------------------------------------- forward (as nn.LSTM)
def both(**kw):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(**kw)
    torch.manual_seed(0)
    return ref, torchlstm.LSTM(**kw)


@pytest.mark.parametrize("make_input,hx,exc", [
    (lambda: torch.randn(3, 2, 4, 5), None, ValueError),                      # 4-D
    (lambda: torch.randn(5), None, ValueError),                               # 1-D
    (lambda: torch.randn(3, 2, 6), None, RuntimeError),                       # feature size
    (lambda: torch.randn(3, 2, 5, dtype=torch.float64), None, ValueError),    # dtype
    (lambda: torch.randn(3, 2, 5), (torch.randn(1, 2, 4), torch.randn(1, 2, 4)), RuntimeError),
    (lambda: torch.randn(3, 2, 5), (torch.randn(1, 3, 7), torch.randn(1, 3, 7)), RuntimeError),
    (lambda: torch.randn(3, 2, 5), (torch.randn(2, 7), torch.randn(2, 7)), RuntimeError),
    (lambda: torch.randn(3, 5), (torch.randn(1, 2, 7), torch.randn(1, 2, 7)), RuntimeError),
    (lambda: torch.randn(3, 2, 5), (torch.randn(1, 2, 7), torch.randn(1, 2, 6)), RuntimeError),
])
def test_forward_errors_match_nn(make_input, hx, exc):
    ref, ours = both(input_size=5, hidden_size=7)
    x = make_input()
    with pytest.raises(exc) as e_ref:
        ref(x, hx)
    with pytest.raises(exc) as e_ours:
        ours(x, hx)
    assert str(e_ours.value) == str(e_ref.value)


def test_forward_errors_hx_dtype_and_type():
    m = torchlstm.LSTM(5, 7)
    x = torch.randn(3, 2, 5)
    with pytest.raises(RuntimeError, match=r"hx\[1\] must have the dtype"):
        m(x, (torch.randn(1, 2, 7), torch.randn(1, 2, 7, dtype=torch.float64)))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        m(x, torch.randn(1, 2, 7))


def test_unsupported_dtype_is_a_clear_error():
    args = [a.to(torch.complex64) if isinstance(a, torch.Tensor) and a.is_floating_point()
            else a for a in op_args()]
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64, got ComplexFloat"):
        ops.layer_forward(*args)


def test_cell_errors_match_nn():
    torch.manual_seed(0)
    ref, ours = torch.nn.LSTMCell(5, 7), torchlstm.LSTMCell(5, 7)
    cases = [
        (torch.randn(2, 3, 5), None, ValueError),
        (torch.randn(2, 6), None, RuntimeError),
        (torch.randn(2, 5), (torch.randn(3, 7), torch.randn(3, 7)), RuntimeError),
        (torch.randn(2, 5), (torch.randn(2, 6), torch.randn(2, 6)), RuntimeError),
    ]
    for x, hx, exc in cases:
        with pytest.raises(exc) as e_ref:
            ref(x, hx)
        with pytest.raises(exc) as e_ours:
            ours(x, hx)
        assert str(e_ours.value) == str(e_ref.value), (x.shape, hx)


def test_rnn_errors():
    rnn = torchlstm.RNN(torchlstm.LSTMCell(5, 7))
    with pytest.raises(TypeError, match="torchlstm.LSTMCell"):
        torchlstm.RNN(torch.nn.LSTMCell(5, 7))
    with pytest.raises(ValueError, match="3D"):
        rnn(torch.randn(2, 3, 4, 5))
    with pytest.raises(RuntimeError, match="input_size"):
        rnn(torch.randn(2, 3, 4))
    with pytest.raises(RuntimeError, match="hidden0 batch size"):
        rnn(torch.randn(2, 3, 5), (torch.randn(3, 7), torch.randn(3, 7)))


# ----------------------------------------------------------------- the ops, called directly
@pytest.mark.parametrize("override,exc,pattern", [
    (dict(input=torch.randn(4, 5)), ValueError, "input must be 3-D"),
    (dict(w_ih=torch.randn(23, 5)), ValueError, r"w_ih must have shape \(4\*hidden_size"),
    (dict(w_ih=torch.randn(24, 4)), ValueError, r"w_ih must have shape \[24, 5\]"),
    (dict(w_hh=torch.randn(24, 5)), ValueError, "w_hh must have shape"),
    (dict(b_ih=torch.randn(23)), ValueError, "b_ih must have shape"),
    (dict(h0=torch.randn(2, 6)), ValueError, "h0 must have shape"),
    (dict(c0=torch.randn(3, 5)), ValueError, "c0 must have shape"),
    (dict(c0=torch.randn(3, 6, dtype=torch.float64)), TypeError, "c0 must have the dtype"),
    (dict(w_hr=torch.randn(2, 6)), ValueError, "w_hh must have shape"),
    (dict(mask=torch.ones(4, 3)), TypeError, "mask must be a bool"),
    (dict(mask=torch.ones(3, 4, dtype=torch.bool)), ValueError, "mask must have shape"),
    (dict(activation=117), ValueError, "unknown activation id 117"),
    (dict(recurrent_activation=-1), ValueError, "unknown recurrent_activation id"),
    (dict(input=torch.randn(4, 3, 5, dtype=torch.float16)), TypeError,
     r"w_ih must have the dtype of input \(Half\)"),
    (dict(input=torch.ones(4, 3, 5, dtype=torch.int64)), TypeError,
     "float16, bfloat16, float32 or float64, got Long"),
])
def test_op_argument_errors(override, exc, pattern):
    with pytest.raises(exc, match=pattern):
        ops.layer_forward(*op_args(**override))


def test_op_backward_argument_errors():
    args = op_args()
    out, h, c, gates, cs = ops.layer_forward(*args)
    good = [out, h, c] + args[:5] + [None, None, out, gates, cs, False, 0, 1]
    ops.layer_backward(*good)
    bad = list(good)
    bad[11] = gates[:, :, :-1]
    with pytest.raises(ValueError, match="gates must have shape"):
        ops.layer_backward(*bad)
    bad = list(good)
    bad[0] = out[:-1]
    with pytest.raises(ValueError, match="grad_output must have shape"):
        ops.layer_backward(*bad)


def test_differentiating_layer_backward_itself_is_a_clear_error():
    """Double backward goes through layer_forward (tests/test_double_backward.py); the
    backward op called directly has no derivative and says so."""
    args = [a.double().requires_grad_() if isinstance(a, torch.Tensor) else a
            for a in op_args()]
    with torch.no_grad():
        out, h_n, c_n, gates, cs = ops.layer_forward(*args)
    go = torch.randn_like(out, requires_grad=True)
    grads = ops.layer_backward(go, None, None, *args[:5], None, None, out, gates, cs, False, 0, 1)
    with pytest.raises(RuntimeError, match="no derivative"):
        grads[0].sum().backward()


def test_op_zero_dim_projection_weight():
    with pytest.raises(ValueError, match="w_hr must have shape"):
        ops.layer_forward(*op_args(w_hr=torch.tensor(1.0)))


def test_cell_states_must_have_the_cell_state_dtype():
    args = [a.to(torch.bfloat16) if isinstance(a, torch.Tensor) and a.is_floating_point()
            else a for a in op_args()]
    out, h_n, c_n, gates, cs = ops.layer_forward(*args)
    with pytest.raises(TypeError, match="cs must have dtype Float"):
        ops.layer_backward(None, None, None, *args[:5], None, None, out, gates,
                           cs.to(torch.bfloat16), False, 0, 1)
