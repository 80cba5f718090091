"""DistributedDataParallel and FSDP2 (issue 14): 2 CPU processes (gloo, localhost), float64,
a few SGD steps of a model with several torchlstm layers, each process on half the batch,
equal one process on the whole batch."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import torchlstm

STEPS, BATCH, TIME = 3, 6, 5


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torchlstm.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=3)
        self.rnn = torchlstm.RNN(torchlstm.LSTMCell(6, 4, activation="gelu"),
                                 return_sequences=True)
        self.cell = torchlstm.LSTMCell(4, 4)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):  # x (T, B, 3)
        y, _ = self.lstm(x)
        y = self.rnn(y.transpose(0, 1))  # (B, T, 4)
        h, c = self.cell(y[:, -1], (y[:, 0], y[:, 1]))
        return self.head(h + c).squeeze(1)


def data():
    g = torch.Generator().manual_seed(7)
    return (torch.randn(STEPS, TIME, BATCH, 3, generator=g, dtype=torch.float64),
            torch.randn(STEPS, BATCH, generator=g, dtype=torch.float64))


def make_net():
    torch.manual_seed(3)
    return Net().double()


def train(model, params, xs, ys):
    opt = torch.optim.SGD(params, lr=0.1)
    for x, y in zip(xs, ys):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _worker(rank, world, port, kind, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        net = make_net()
        xs, ys = data()
        half = BATCH // world
        xs, ys = xs[:, :, rank * half:(rank + 1) * half], ys[:, rank * half:(rank + 1) * half]
        if kind == "ddp":
            model = torch.nn.parallel.DistributedDataParallel(net)
            train(model, model.parameters(), xs, ys)
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            from torch.distributed.fsdp import fully_shard
            for m in (net.lstm, net.rnn, net.cell):
                fully_shard(m)
            fully_shard(net)
            train(net, net.parameters(), xs, ys)
            state = {k: v.full_tensor().detach().clone() for k, v in net.state_dict().items()}
        if rank == 0:
            torch.save(state, out)
        # both ranks done with every collective before either tears gloo down: without
        # this, a rank that destroys the group while the other is still in its last
        # collective sometimes aborts ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process():
    net = make_net()
    xs, ys = data()
    train(net, net.parameters(), xs, ys)
    return net.state_dict()


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_processes_equal_one(kind, tmp_path):
    out = str(tmp_path / "state.pt")
    mp.spawn(_worker, args=(2, free_port(), kind, out), nprocs=2, join=True)
    got, ref = torch.load(out), single_process()
    assert got.keys() == ref.keys()
    moved = 0
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-12, rtol=1e-12, msg=k)
        moved += int(not torch.equal(ref[k], make_net().state_dict()[k]))
    assert moved == len(ref)  # every parameter trained
