"""Double backward (create_graph=True through LSTM, LSTMCell and RNN, then backward
again: gradient penalties, Hessian-vector products): against torch.nn.LSTM's own double
backward, gradgradcheck in float64, and every option (masks, reverse, projection, Keras
activations, dropout and zoneout) against the reference loop's autograd."""
import pytest
import torch

import torchlstm
from support import lstm_layer, randn, regularizers, twin_lstms


def penalty_grads(model, x, params):
    """d/dθ of ‖d loss/dx‖² (a gradient penalty), loss = sum of out²."""
    out = model(x)[0]
    out = out.data if hasattr(out, "batch_sizes") else out
    g, = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    return torch.autograd.grad(g.pow(2).sum(), [x, *params])


@pytest.mark.parametrize("num_layers,bidirectional,proj_size,bias", [
    (1, False, 0, True), (2, True, 0, True), (1, False, 2, False), (2, True, 3, True)])
def test_double_backward_equals_nn_lstm(num_layers, bidirectional, proj_size, bias):
    ref, ours = twin_lstms(input_size=3, hidden_size=5, num_layers=num_layers,
                           bidirectional=bidirectional, proj_size=proj_size, bias=bias)
    ref, ours = ref.double(), ours.double()
    x = randn(6, 2, 3, requires_grad=True)
    for a, e in zip(penalty_grads(ours, x, list(ours.parameters())),
                    penalty_grads(ref, x, list(ref.parameters()))):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_cell_and_rnn_double_backward_equal_nn():
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(3, 4).double()
    cell = torchlstm.LSTMCell(3, 4, dtype=torch.float64)
    cell.load_state_dict(ref.state_dict())
    x = randn(2, 3, requires_grad=True)
    for a, e in zip(penalty_grads(cell, x, list(cell.parameters())),
                    penalty_grads(ref, x, list(ref.parameters()))):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)
    lstm = torchlstm.LSTM(3, 4, batch_first=True, dtype=torch.float64)
    lstm.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    rnn = torchlstm.RNN(cell, return_sequences=True, return_state=True)
    xs = randn(2, 5, 3, requires_grad=True)
    for a, e in zip(penalty_grads(rnn, xs, list(cell.parameters())),
                    penalty_grads(lstm, xs, list(lstm.parameters()))):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("masked,reverse,proj", [(False, False, False), (True, True, False),
                                                 (True, False, True)])
def test_gradgradcheck_of_the_op(masked, reverse, proj):
    T, B, I, H, P = 4, 2, 3, 3, 2
    Hout = P if proj else H
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, False]]) \
        if masked else None
    args = (randn(T, B, I, requires_grad=True), randn(B, Hout, requires_grad=True),
            randn(B, H, requires_grad=True), randn(4 * H, I, scale=0.5, requires_grad=True),
            randn(4 * H, Hout, scale=0.5, requires_grad=True), randn(4 * H, requires_grad=True),
            randn(4 * H, requires_grad=True),
            randn(Hout, H, scale=0.5, requires_grad=True) if proj else None)

    def f(*a):
        full = a if proj else a + (None,)  # w_hr
        return torch.ops.torchlstm.layer_forward(*full, mask, reverse, 0, 1)[:3]
    assert torch.autograd.gradgradcheck(f, tuple(a for a in args if a is not None))


@pytest.mark.parametrize("act,ract", [("tanh", "sigmoid"), ("gelu", "hard_sigmoid"),
                                      ("mish", "softsign")])
@pytest.mark.parametrize("which", ["iorc", "oc"])
def test_double_backward_every_option_matches_reference(act, ract, which):
    """Masks, reverse, Keras activations, dropout masks and zoneout z through the op vs the
    reference loop differentiated twice by autograd."""
    T, B, I, H = 5, 3, 3, 4
    from torchlstm import activations
    x = randn(T, B, I, requires_grad=True)
    h0, c0 = randn(B, H, requires_grad=True), randn(B, H, requires_grad=True)
    w_ih, w_hh = randn(4 * H, I, scale=0.4, requires_grad=True), randn(4 * H, H, scale=0.4,
                                                                      requires_grad=True)
    b = randn(4 * H, requires_grad=True)
    mask = torch.rand(T, B) > 0.3
    reg = regularizers(T=T, B=B, I=I, H=H, Hout=H, which=which)
    ids = activations.resolve(act), activations.resolve(ract)

    def ours():
        return torch.ops.torchlstm.layer_forward(x, h0, c0, w_ih, w_hh, b, None, None, mask,
                                                 True, *ids, *reg)[:3]

    def reference():
        return lstm_layer(x, h0, c0, w_ih, w_hh, b, None, None, mask, True, act, ract,
                          **dict(zip(("input_keep", "recurrent_keep", "zoneout_h", "zoneout_c"),
                                     reg)))
    results = []
    for run in (ours, reference):
        out, h, c = run()
        g = torch.autograd.grad(out.pow(2).sum() + c.sum(), [x, w_hh], create_graph=True)
        results.append(torch.autograd.grad(sum(t.pow(2).sum() for t in g),
                                           [x, h0, c0, w_ih, w_hh, b]))
    for a, e in zip(*results):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)
