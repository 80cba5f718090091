"""torch.compile(fullgraph=True) traces torchlstm without a graph break (nn.LSTM cannot)."""
import pytest
import torch

import torchlstm
from support import assert_close, randn


class Tagger(torch.nn.Module):
    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm
        out = (lstm.proj_size or lstm.hidden_size) * (2 if lstm.bidirectional else 1)
        self.head = torch.nn.Linear(out, 3)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        return self.head(y).sum() + h.pow(2).sum() + c.sum()


@pytest.mark.parametrize("kw", [dict(num_layers=2, bidirectional=True),
                                dict(proj_size=3, recurrent_activation="hard_sigmoid")])
def test_compile_fullgraph_forward_backward(kw):
    torch._dynamo.reset()
    model = Tagger(torchlstm.LSTM(5, 6, batch_first=True, **kw))
    x = randn(4, 7, 5, dtype=torch.float32, requires_grad=True)
    eager = model(x)
    g_eager = torch.autograd.grad(eager, [x] + list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    g = torch.autograd.grad(out, [x] + list(model.parameters()))
    assert_close(out, eager, torch.float32)
    for a, e in zip(g, g_eager):
        assert_close(a, e, torch.float32)


def test_compile_inductor_cell_and_rnn():
    torch._dynamo.reset()
    cell = torchlstm.LSTMCell(5, 6)
    rnn = torchlstm.RNN(cell, return_sequences=True, return_state=True)

    def f(x):
        y, h, c = rnn(x)
        h2, c2 = cell(x[:, 0], (h, c))
        return y.sum() + h2.sum() + c2.sum()
    x = randn(3, 4, 5, dtype=torch.float32, requires_grad=True)
    eager = f(x)
    ge, = torch.autograd.grad(eager, x)
    compiled = torch.compile(f, fullgraph=True)
    out = compiled(x)
    g, = torch.autograd.grad(out, x)
    assert_close(out, eager, torch.float32)
    assert_close(g, ge, torch.float32)


def test_nn_lstm_cannot_fullgraph():
    """The reason torchlstm registers ops: Dynamo refuses nn.LSTM in fullgraph mode."""
    torch._dynamo.reset()
    model = torch.nn.LSTM(5, 6)
    with pytest.raises(Exception, match="RNN, GRU, or LSTM"):
        torch.compile(model, fullgraph=True, backend="eager")(randn(3, 2, 5, dtype=torch.float32))
