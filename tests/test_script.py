"""torch.jit.script(torchlstm.LSTM / LSTMCell): the scripted module gives the eager one's
outputs and gradients, shares its parameters, has nn.LSTM's scripted state_dict, survives
torch.jit.save / torch.jit.load, and the options TorchScript cannot express are refused
at script time, naming the option."""
import subprocess
import sys
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import torchlstm
from support import assert_close, randn

I, H, T, B = 5, 6, 4, 3

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:FutureWarning")


def script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.* is deprecated
        return torch.jit.script(module)


def outputs_and_grads(model, x, hx, cell=False):
    """The flattened outputs, and the gradients of a weighted sum of them with respect
    to x, hx and every parameter."""
    out = model(x, hx)
    flat = list(out) if cell else [out[0], *out[1]]
    loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view(t.shape)).sum()
               for t in flat)
    inputs = [x] + list(hx or []) + list(model.parameters())
    return flat, torch.autograd.grad(loss, inputs)


def assert_same(eager, scripted, x, hx=None, cell=False):
    (o1, g1), (o2, g2) = (outputs_and_grads(m, x, hx, cell) for m in (eager, scripted))
    assert len(o1) == len(o2) and len(g1) == len(g2)
    for a, e in zip(o2 + list(g2), o1 + list(g1)):
        assert a.shape == e.shape
        assert_close(a, e, torch.float64)


LSTM_CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(proj_size=3),
    dict(bias=False, batch_first=True),
    dict(num_layers=3, bidirectional=True, proj_size=2, batch_first=True, bias=False),
    dict(num_layers=2, recurrent_activation="hard_sigmoid", activation="softsign"),
]


def lstm_input(lstm, batched=True, with_hx=False):
    D = 2 if lstm.bidirectional else 1
    Hout = lstm.proj_size or lstm.hidden_size
    if batched:
        x = randn(*((B, T, I) if lstm.batch_first else (T, B, I)), requires_grad=True)
        s = (B,)
    else:
        x, s = randn(T, I, requires_grad=True), ()
    hx = None
    if with_hx:
        L = lstm.num_layers * D
        hx = (randn(L, *s, Hout, requires_grad=True), randn(L, *s, H, requires_grad=True))
    return x, hx


@pytest.mark.parametrize("with_hx", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize("kw", LSTM_CONFIGS, ids=lambda kw: ",".join(kw) or "default")
def test_lstm_matches_eager(kw, with_hx):
    eager = torchlstm.LSTM(I, H, dtype=torch.float64, **kw)
    scripted = script(eager)
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert_same(eager, scripted, *lstm_input(eager, True, with_hx))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no_hx", "hx"])
def test_lstm_unbatched(batch_first, with_hx):
    eager = torchlstm.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=batch_first,
                           dtype=torch.float64)
    scripted = script(eager)
    x, hx = lstm_input(eager, False, with_hx)
    assert_same(eager, scripted, x, hx)
    out, (h, c) = scripted(x, hx)
    assert out.shape == (T, 2 * H) and h.shape == c.shape == (4, H)


def test_lstm_matches_nn_lstm_and_state_dict():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3, dtype=torch.float64)
    torch.manual_seed(0)
    eager = torchlstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3,
                           dtype=torch.float64)
    scripted, scripted_ref = script(eager), script(ref)
    sd, sd_ref = scripted.state_dict(), scripted_ref.state_dict()
    assert list(sd) == list(sd_ref) == list(eager.state_dict())
    for name, t in sd.items():
        assert t.data_ptr() == getattr(eager, name).data_ptr()  # shared, not copied
        torch.testing.assert_close(t, sd_ref[name])
    x = randn(T, B, I)
    out, (h, c) = scripted(x)
    out_ref, (h_ref, c_ref) = ref(x)
    for a, e in ((out, out_ref), (h, h_ref), (c, c_ref)):
        assert_close(a, e, torch.float64)
    with torch.no_grad():  # an update of the eager module's parameters reaches the scripted
        eager.weight_hh_l1_reverse.mul_(0.5)
    assert not torch.allclose(scripted(x)[0], out)
    scripted.load_state_dict(sd_ref)  # and load_state_dict into the scripted one
    assert_close(scripted(x)[0], out, torch.float64)


def test_lstm_inference_path_and_dtype_change():
    eager = torchlstm.LSTM(I, H, num_layers=2)
    scripted = script(eager)
    x = torch.randn(T, B, I)
    with torch.no_grad():  # layer_inference
        out, (h, c) = scripted(x)
    assert out.grad_fn is None
    out_e, (h_e, c_e) = eager(x)
    assert_close(out, out_e, torch.float32)
    assert_close(c, c_e, torch.float32)
    scripted.double()  # the scripted module's parameters change dtype in place
    assert scripted(x.double())[0].dtype == torch.float64


def test_lstm_dropout_between_layers():
    eager = torchlstm.LSTM(I, H, num_layers=3, dropout=0.5, dtype=torch.float64)
    scripted = script(eager)
    x = randn(T, B, I, requires_grad=True)
    eager.train(), scripted.train()
    torch.manual_seed(7)
    o1, g1 = outputs_and_grads(eager, x, None)
    torch.manual_seed(7)
    o2, g2 = outputs_and_grads(scripted, x, None)
    for a, e in zip(o2 + list(g2), o1 + list(g1)):
        assert_close(a, e, torch.float64)
    scripted.eval()
    assert not torch.allclose(scripted(x)[0], o2[0])  # no dropout in eval
    eager.eval()
    assert_close(scripted(x)[0], eager(x)[0], torch.float64)


@pytest.mark.parametrize("batched", [True, False], ids=["2d", "1d"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize("kw", [dict(), dict(bias=False),
                                dict(recurrent_activation="hard_sigmoid")],
                         ids=["default", "no_bias", "hard_sigmoid"])
def test_cell_matches_eager(kw, with_hx, batched):
    eager = torchlstm.LSTMCell(I, H, dtype=torch.float64, **kw)
    scripted = script(eager)
    s = (B,) if batched else ()
    x = randn(*s, I, requires_grad=True)
    hx = (randn(*s, H, requires_grad=True), randn(*s, H, requires_grad=True)) if with_hx else None
    assert_same(eager, scripted, x, hx, cell=True)
    with torch.no_grad():
        h, c = scripted(x, hx)
    assert h.shape == c.shape == (*s, H) and h.grad_fn is None


def test_cell_state_dict_and_nn_cell():
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(I, H, bias=False, dtype=torch.float64)
    torch.manual_seed(0)
    eager = torchlstm.LSTMCell(I, H, bias=False, dtype=torch.float64)
    scripted = script(eager)
    assert list(scripted.state_dict()) == list(script(ref).state_dict())
    x, hx = randn(B, I), (randn(B, H), randn(B, H))
    for a, e in zip(scripted(x, hx), ref(x, hx)):
        assert_close(a, e, torch.float64)


def test_scripted_submodule():
    """torch.jit.script of a model holding the modules prepares them too."""
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torchlstm.LSTM(I, H, batch_first=True, bidirectional=True)
            self.cell = torchlstm.LSTMCell(2 * H, H)
            self.head = torch.nn.Linear(H, 2)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            h1, c1 = self.cell(y[:, -1])
            return self.head(h1) + c.sum()

    model = Model()
    x = torch.randn(B, T, I)
    expected = model(x)
    scripted = script(model)
    assert_close(scripted(x), expected, torch.float32)
    assert list(scripted.state_dict()) == list(model.state_dict())
    # torch.jit.script put the scriptable twins into the eager model (torch's behaviour for
    # __prepare_scriptable__ submodules): they run eagerly too, with the same parameters
    assert isinstance(model.lstm, torchlstm._script.ScriptLSTM)
    assert_close(model(x), expected, torch.float32)
    h0 = (torch.zeros(2, B, H), torch.zeros(2, B, H))
    assert_close(model.lstm(x, h0)[0], scripted.lstm(x)[0], torch.float32)


LOAD = r"""
import sys, torch, torchlstm
m = torch.jit.load(sys.argv[1])
args = torch.load(sys.argv[2])
out = m(*args)
flat = [out[0], *out[1]] if isinstance(out[1], tuple) else list(out)
sum(t.sum() for t in flat).backward()
torch.save((flat, [p.grad for p in m.parameters()]), sys.argv[3])
"""


@pytest.mark.parametrize("which", ["lstm", "cell"])
def test_save_load_in_subprocess(which, tmp_path):
    if which == "lstm":
        eager = torchlstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2,
                               batch_first=True, recurrent_activation="hard_sigmoid",
                               dtype=torch.float64)
        args = (randn(B, T, I), (randn(4, B, 2), randn(4, B, H)))
    else:
        eager = torchlstm.LSTMCell(I, H, activation="softsign", dtype=torch.float64)
        args = (randn(B, I), (randn(B, H), randn(B, H)))
    path = tmp_path / "m.pt"
    torch.jit.save(script(eager), str(path))
    torch.save(args, tmp_path / "args.pt")
    subprocess.run([sys.executable, "-W", "ignore", "-c", LOAD, str(path),
                    str(tmp_path / "args.pt"), str(tmp_path / "out.pt")], check=True)
    flat, grads = torch.load(tmp_path / "out.pt")
    out = eager(*args)
    expected = [out[0], *out[1]] if which == "lstm" else list(out)
    sum(t.sum() for t in expected).backward()
    for a, e in zip(flat, expected):
        assert_close(a, e, torch.float64)
    for a, p in zip(grads, eager.parameters()):
        assert_close(a, p.grad, torch.float64)


CELL_REFUSED = [
    (dict(input_dropout=0.1), "input_dropout"),
    (dict(recurrent_dropout=0.2), "recurrent_dropout"),
    (dict(zoneout=(0.0, 0.1)), "zoneout"),
    (dict(activation=lambda t: t.tanh()), "activation"),
    (dict(recurrent_activation=lambda t: t.sigmoid()), "recurrent_activation"),
]
LSTM_REFUSED = [
    (dict(return_sequences=True), "return_sequences"),
    (dict(return_state=False), "return_state"),
    (dict(go_backwards=True), "go_backwards"),
    (dict(stateful=True), "stateful"),
]


@pytest.mark.parametrize("cls,kw,option",
                         [("LSTM", kw, o) for kw, o in LSTM_REFUSED + CELL_REFUSED]
                         + [("LSTMCell", kw, o) for kw, o in CELL_REFUSED],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_unscriptable_options_are_refused(cls, kw, option):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a callable activation warns
        module = getattr(torchlstm, cls)(I, H, **kw)
    with pytest.raises(RuntimeError, match=rf"torch.jit.script\({cls}\): {option}=.*cannot be "
                                           "scripted"):
        script(module)


def test_packed_sequence_is_torchscript_type_error():
    """The scripted forward takes a Tensor: a PackedSequence is TorchScript's own error."""
    scripted = script(torchlstm.LSTM(I, H))
    packed = pack_padded_sequence(torch.randn(T, B, I), [4, 3, 2])
    with pytest.raises(RuntimeError, match="Expected a value of type 'Tensor'"):
        scripted(packed)


def test_input_errors():
    lstm, cell = script(torchlstm.LSTM(I, H)), script(torchlstm.LSTMCell(I, H))
    with pytest.raises(Exception, match="Expected input to be 2D or 3D, got 4D"):
        lstm(torch.randn(1, T, B, I))
    with pytest.raises(Exception, match="input.size\\(-1\\) must be equal to input_size"):
        lstm(torch.randn(T, B, I + 1))
    with pytest.raises(Exception, match="Expected hidden\\[0\\] size"):
        lstm(torch.randn(T, B, I), (torch.randn(1, B + 1, H), torch.randn(1, B, H)))
    with pytest.raises(Exception, match="sequence length to be larger than 0"):
        lstm(torch.randn(0, B, I))
    with pytest.raises(Exception, match="Expected input to be 1D or 2D, got 3D"):
        cell(torch.randn(1, B, I))
    with pytest.raises(Exception, match="hidden1 has inconsistent hidden_size"):
        cell(torch.randn(B, I), (torch.randn(B, H), torch.randn(B, H + 1)))
