"""A seeded random sweep of parity with torch.nn.LSTM and torch.nn.LSTMCell.

Each case draws one configuration (layers, directions, batch_first, proj_size, bias,
T 1-12, B 0-5, unbatched / padded / PackedSequence sorted or unsorted, given or omitted
(h0, c0), float64 or float32, with or without autograd) from its own seed, builds
nn.LSTM and torchlstm.LSTM under the same ``torch.manual_seed`` (their initialisations
agree) and compares the outputs, the final states and every gradient (input, h0, c0 and
every parameter).

    TORCHLSTM_SWEEP_SEED   the base seed (default 0): another value, other cases
    TORCHLSTM_SWEEP_CASES  how many LSTM cases (default 300; half as many cell cases)

A failing case prints its seed and configuration; it runs again on its own with
``python tests/test_parity_sweep.py lstm SEED`` (or ``cell SEED``).
"""
from __future__ import annotations

import os
import random
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import torchlstm

BASE_SEED = int(os.environ.get("TORCHLSTM_SWEEP_SEED", "0"))
LSTM_CASES = int(os.environ.get("TORCHLSTM_SWEEP_CASES", "300"))
CELL_CASES = max(1, LSTM_CASES // 2)
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 2e-5)}


def case_seed(kind: str, index: int) -> int:
    """The seed of case ``index``: a function of the base seed only, so a run with the
    same TORCHLSTM_SWEEP_SEED draws the same cases."""
    return (BASE_SEED * 1_000_003 + index * 7919 + (0 if kind == "lstm" else 500_009)) % 2**31


# ----------------------------------------------------------------- configurations
def draw_lstm_config(seed: int) -> dict:
    r = random.Random(seed)
    hidden = r.randint(1, 6)
    cfg = dict(
        input_size=r.randint(1, 5),
        hidden_size=hidden,
        num_layers=r.randint(1, 3),
        bidirectional=r.random() < 0.5,
        batch_first=r.random() < 0.5,
        proj_size=r.randint(1, hidden - 1) if hidden > 1 and r.random() < 0.4 else 0,
        bias=r.random() < 0.75,
        dtype=torch.float64 if r.random() < 0.5 else torch.float32,
        T=r.randint(1, 12),
        B=r.randint(0, 5),
        layout=r.choice(["padded", "padded", "unbatched", "packed_sorted", "packed_unsorted"]),
        with_hx=r.random() < 0.5,
        grad=r.random() < 0.8,  # False: under no_grad (the inference op)
    )
    if cfg["layout"].startswith("packed") and cfg["B"] == 0:
        cfg["B"] = 1  # a PackedSequence cannot be empty
    if cfg["layout"].startswith("packed"):
        cfg["lengths"] = [r.randint(1, cfg["T"]) for _ in range(cfg["B"])]
        cfg["lengths"][r.randrange(cfg["B"])] = cfg["T"]  # padded to the longest
        if cfg["layout"] == "packed_sorted":
            cfg["lengths"].sort(reverse=True)
    return cfg


def draw_cell_config(seed: int) -> dict:
    r = random.Random(seed)
    return dict(
        input_size=r.randint(1, 6),
        hidden_size=r.randint(1, 6),
        bias=r.random() < 0.75,
        dtype=torch.float64 if r.random() < 0.5 else torch.float32,
        B=r.randint(0, 5),
        unbatched=r.random() < 0.25,
        with_hx=r.random() < 0.6,
        grad=r.random() < 0.8,
    )


def describe(kind: str, seed: int, cfg: dict) -> str:
    shown = {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v)
             for k, v in cfg.items()}
    return (f"{kind} case seed={seed} (TORCHLSTM_SWEEP_SEED={BASE_SEED}) config={shown}; "
            f"rerun: python tests/test_parity_sweep.py {kind} {seed}")


# ----------------------------------------------------------------- comparisons
def close(actual, expected, dtype, what: str, where: str) -> None:
    assert type(actual) is type(expected), f"{where}: {what} is a {type(actual).__name__}, " \
                                           f"nn gives a {type(expected).__name__}"
    assert actual.shape == expected.shape, \
        f"{where}: {what} has shape {tuple(actual.shape)}, nn's {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{where}: {what} dtype {actual.dtype} vs {expected.dtype}"
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol,
                               msg=lambda m: f"{where}: {what} differs from nn's: {m}")


def twins(seed: int, ref_cls, our_cls, **kw):
    torch.manual_seed(seed)
    ref = ref_cls(**kw)
    torch.manual_seed(seed)
    ours = our_cls(**kw)
    return ref, ours


# ----------------------------------------------------------------- one LSTM case
def lstm_inputs(cfg: dict, g: torch.Generator):
    """(input as the module takes it, the leaf tensors to differentiate, hx or None)."""
    T, B, I, dt = cfg["T"], cfg["B"], cfg["input_size"], cfg["dtype"]
    D = 2 if cfg["bidirectional"] else 1
    L = cfg["num_layers"]
    H = cfg["hidden_size"]
    Hout = cfg["proj_size"] or H
    rg = cfg["grad"]

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dt).requires_grad_(rg)

    layout = cfg["layout"]
    if layout == "unbatched":
        x = rand(T, I)
        leaves = [x]
        hx = (rand(L * D, Hout), rand(L * D, H)) if cfg["with_hx"] else None
        return (lambda: x), leaves, hx
    if layout == "padded":
        x = rand(*((B, T, I) if cfg["batch_first"] else (T, B, I)))
        hx = (rand(L * D, B, Hout), rand(L * D, B, H)) if cfg["with_hx"] else None
        return (lambda: x), [x], hx
    # packed: the padded leaf goes through pack_padded_sequence in each module's graph
    x = rand(*((B, T, I) if cfg["batch_first"] else (T, B, I)))
    lengths = torch.tensor(cfg["lengths"])
    sorted_ = layout == "packed_sorted"
    hx = (rand(L * D, B, Hout), rand(L * D, B, H)) if cfg["with_hx"] else None

    def make():
        return pack_padded_sequence(x, lengths, batch_first=cfg["batch_first"],
                                    enforce_sorted=sorted_)
    return make, [x], hx


def run_lstm(model, make_input, hx, weights):
    out, (h, c) = model(make_input(), hx)
    data = out.data if isinstance(out, PackedSequence) else out
    w_out, w_h, w_c = weights
    loss = (data * w_out(data)).sum() + (h * w_h(h)).sum() + (c * w_c(c)).sum()
    return out, h, c, loss


def check_lstm_case(seed: int) -> None:
    cfg = draw_lstm_config(seed)
    where = describe("lstm", seed, cfg)
    kw = {k: cfg[k] for k in ("input_size", "hidden_size", "num_layers", "bidirectional",
                              "batch_first", "proj_size", "bias", "dtype")}
    ref, ours = twins(seed, nn.LSTM, torchlstm.LSTM, **kw)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd), f"{where}: parameter names {list(our_sd)}"
    for k in ref_sd:  # the same seed gives nn.LSTM's initialisation
        assert torch.equal(our_sd[k], ref_sd[k]), f"{where}: initial {k} differs from nn's"

    g = torch.Generator().manual_seed(seed)
    make_input, leaves, hx = lstm_inputs(cfg, g)
    leaves = leaves + (list(hx) if hx is not None else [])
    cache = {}

    def weight(key):  # the same random loss weights for both modules, made on first use
        def f(t):
            if key not in cache:
                cache[key] = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
            return cache[key]
        return f
    weights = (weight("out"), weight("h"), weight("c"))

    dt = cfg["dtype"]
    with torch.set_grad_enabled(cfg["grad"]):
        e_out, e_h, e_c, e_loss = run_lstm(ref, make_input, hx, weights)
        a_out, a_h, a_c, a_loss = run_lstm(ours, make_input, hx, weights)
    if isinstance(e_out, PackedSequence):
        assert isinstance(a_out, PackedSequence), f"{where}: output is not a PackedSequence"
        close(a_out.data, e_out.data, dt, "output.data", where)
        assert torch.equal(a_out.batch_sizes, e_out.batch_sizes), f"{where}: batch_sizes"
        for name in ("sorted_indices", "unsorted_indices"):
            a, e = getattr(a_out, name), getattr(e_out, name)
            assert (a is None) == (e is None) and (a is None or torch.equal(a, e)), \
                f"{where}: {name} {a} vs nn's {e}"
    else:
        close(a_out, e_out, dt, "output", where)
    close(a_h, e_h, dt, "h_n", where)
    close(a_c, e_c, dt, "c_n", where)
    if not cfg["grad"]:
        assert not a_out_requires_grad(a_out), f"{where}: output requires grad under no_grad"
        return

    e_params = [p for _, p in ref.named_parameters()]
    a_named = list(ours.named_parameters())
    names = ["input"] + (["h0", "c0"] if hx is not None else []) + [n for n, _ in a_named]
    e_grads = torch.autograd.grad(e_loss, leaves + e_params, materialize_grads=True)
    a_grads = torch.autograd.grad(a_loss, leaves + [p for _, p in a_named],
                                  materialize_grads=True)
    assert len(a_grads) == len(e_grads) == len(names), where
    for name, a, e in zip(names, a_grads, e_grads):
        close(a, e, dt, f"grad of {name}", where)


def a_out_requires_grad(out) -> bool:
    return (out.data if isinstance(out, PackedSequence) else out).requires_grad


# ----------------------------------------------------------------- one cell case
def check_cell_case(seed: int) -> None:
    cfg = draw_cell_config(seed)
    where = describe("cell", seed, cfg)
    kw = {k: cfg[k] for k in ("input_size", "hidden_size", "bias", "dtype")}
    ref, ours = twins(seed, nn.LSTMCell, torchlstm.LSTMCell, **kw)
    for (kr, vr), (ka, va) in zip(ref.state_dict().items(), ours.state_dict().items()):
        assert kr == ka and torch.equal(va, vr), f"{where}: initial {ka} differs from nn's {kr}"
    g = torch.Generator().manual_seed(seed)
    B, I, H, dt = cfg["B"], cfg["input_size"], cfg["hidden_size"], cfg["dtype"]
    rg = cfg["grad"]

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dt).requires_grad_(rg)
    lead = () if cfg["unbatched"] else (B,)
    x = rand(*lead, I)
    hx = (rand(*lead, H), rand(*lead, H)) if cfg["with_hx"] else None
    w_h, w_c = (torch.randn(*lead, H, generator=g, dtype=torch.float64).to(dt) for _ in "hc")
    with torch.set_grad_enabled(rg):
        e_h, e_c = ref(x, hx)
        a_h, a_c = ours(x, hx)
    close(a_h, e_h, dt, "h", where)
    close(a_c, e_c, dt, "c", where)
    if not rg:
        assert not a_h.requires_grad, f"{where}: h requires grad under no_grad"
        return
    leaves = [x] + (list(hx) if hx is not None else [])
    names = ["input"] + (["h0", "c0"] if hx is not None else []) + [
        n for n, _ in ours.named_parameters()]
    e_grads = torch.autograd.grad((e_h * w_h).sum() + (e_c * w_c).sum(),
                                  leaves + list(ref.parameters()), materialize_grads=True)
    a_grads = torch.autograd.grad((a_h * w_h).sum() + (a_c * w_c).sum(),
                                  leaves + list(ours.parameters()), materialize_grads=True)
    assert len(a_grads) == len(e_grads) == len(names), where
    for name, a, e in zip(names, a_grads, e_grads):
        close(a, e, dt, f"grad of {name}", where)


# ----------------------------------------------------------------- the tests
LSTM_SEEDS = [case_seed("lstm", i) for i in range(LSTM_CASES)]
CELL_SEEDS = [case_seed("cell", i) for i in range(CELL_CASES)]


@pytest.mark.parametrize("seed", LSTM_SEEDS, ids=[f"seed{s}" for s in LSTM_SEEDS])
def test_lstm_matches_nn(seed):
    check_lstm_case(seed)


@pytest.mark.parametrize("seed", CELL_SEEDS, ids=[f"seed{s}" for s in CELL_SEEDS])
def test_lstm_cell_matches_nn(seed):
    check_cell_case(seed)


def test_the_sweep_covers_the_configuration_space():
    """The drawn cases reach every corner the sweep claims (so a change to the drawing
    cannot quietly shrink it)."""
    n = max(LSTM_CASES, 240)  # the drawing's coverage, at the default count or more
    cfgs = [draw_lstm_config(case_seed("lstm", i)) for i in range(n)]
    seen = lambda key: {c[key] for c in cfgs}  # noqa: E731
    assert seen("num_layers") == {1, 2, 3}
    assert seen("bidirectional") == seen("batch_first") == seen("bias") == {False, True}
    assert seen("with_hx") == seen("grad") == {False, True}
    assert seen("layout") == {"padded", "unbatched", "packed_sorted", "packed_unsorted"}
    assert seen("dtype") == {torch.float32, torch.float64}
    assert 0 in seen("B") and 5 in seen("B") and {1, 12} <= seen("T")
    assert any(c["proj_size"] > 0 for c in cfgs) and any(c["proj_size"] == 0 for c in cfgs)
    assert any(c["layout"] == "padded" and c["B"] == 0 and c["grad"] for c in cfgs)
    assert any(c["layout"] == "packed_unsorted" and c["with_hx"] and c["grad"]
               and c["lengths"] != sorted(c["lengths"], reverse=True) for c in cfgs)
    cells = [draw_cell_config(case_seed("cell", i)) for i in range(max(CELL_CASES, 120))]
    assert {c["B"] for c in cells} >= {0, 5} and {c["unbatched"] for c in cells} == {False, True}


if __name__ == "__main__":  # python tests/test_parity_sweep.py lstm|cell SEED
    kind, s = sys.argv[1], int(sys.argv[2])
    (check_lstm_case if kind == "lstm" else check_cell_case)(s)
    print(f"{kind} case {s}: matches nn")
