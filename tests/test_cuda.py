"""The CUDA kernels (csrc/cuda/) against cuDNN's nn.LSTM, the CPU kernels and float64
references. Skipped where no GPU is present: there the kernels are still compiled and
registered (test_build.py) and their launch logic checked (test_cuda_plan.py);
bench/gpu_check.sh runs this file on a lent GPU.

Every test runs with TF32 off and with torch.empty NaN-filled (deterministic mode's
fill_uninitialized_memory), so an output element a kernel forgets to write is a NaN in
the comparison. Inputs are random, never zeros."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import torchlstm
from torchlstm import _C
from support import (layer_args, mask_for, randn, random_mask,
                     regularizers, rel_err, to_device, twin_lstms)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
ops = torch.ops.torchlstm
I, H, P, T, B = 5, 12, 4, 9, 5


@pytest.fixture(autouse=True)
def _float32_exact_and_outputs_poisoned():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        torch.utils.deterministic.fill_uninitialized_memory = saved[4]
        _C.set_cuda_forward_path("auto")


# ‖out − ref‖ / ‖ref‖ against a float64 reference, per dtype (outputs, gradients).
REL_TOL = {torch.float64: (1e-12, 1e-11), torch.float32: (1e-5, 1e-4),
           torch.float16: (5e-3, 2e-2), torch.bfloat16: (3e-2, 8e-2)}


def set_path(path):
    _C.set_cuda_forward_path(path)


# ------------------------------------------------------------------ vs the CPU kernels
# (the op-level comparisons run on a GPU and on the emulation: tests/test_cuda_code.py)


def test_module_dropout_and_zoneout_on_cuda():
    """Training runs (and is reproducible with a seed); eval (no dropout, zoneout's rate
    blend) equals the same module on the CPU."""
    torch.manual_seed(0)
    kw = dict(num_layers=2, input_dropout=0.2, recurrent_dropout=0.3, zoneout=0.1, seed=7,
              dtype=torch.float64)
    cpu = torchlstm.LSTM(I, H, **kw)
    runs = []
    for _ in range(2):
        lstm = torchlstm.LSTM(I, H, **kw).cuda().train()
        lstm.load_state_dict(cpu.state_dict())
        torch.manual_seed(1)
        x = randn(T, B, I).cuda().requires_grad_()
        out, (h, c) = lstm(x)
        runs.append((out,) + torch.autograd.grad(out.sum() + c.sum(), [x, *lstm.parameters()]))
    for a, e in zip(*runs):  # same seed, same masks
        assert rel_err(a, e) < 1e-14
    lstm.eval()
    cpu.eval()
    with torch.no_grad():
        assert rel_err(lstm(x)[0], cpu(x.cpu())[0]) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_regularizers_paths_agree_at_size(dtype):
    """Dropout and zoneout through the persistent kernel's full inner loop (H > 32, several
    blocks) and the GEMM path's multi-block kernels, in float32 and bfloat16."""
    Tn, Bn, In, Hn = 12, 8, 24, 96
    args = [randn(Tn, Bn, In), randn(Bn, Hn), randn(Bn, Hn), randn(4 * Hn, In, scale=0.3),
            randn(4 * Hn, Hn, scale=0.3), randn(4 * Hn), randn(4 * Hn), None,
            mask_for(Tn, Bn), False, 0, 1]
    reg = regularizers(T=Tn, B=Bn, I=In, H=Hn, Hout=Hn)
    ref = ops.layer_forward(*args, *reg)  # float64 CPU
    for path in ("gemm", "persistent"):
        set_path(path)
        got = ops.layer_forward(*to_device(list(args) + list(reg), "cuda", dtype))
        assert _C.last_cuda_forward_path() == path
        for a, e in zip(got[:3], ref[:3]):
            assert rel_err(a, e) < {torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype], path


def test_automatic_path_choice():
    x = randn(50, 4, 32, dtype=torch.float32).cuda()
    lstm = torchlstm.LSTM(32, 64).cuda()
    with torch.no_grad():
        lstm(x)
        assert _C.last_cuda_forward_path() == "persistent"       # small batch, no projection
        torchlstm.LSTM(32, 64, proj_size=16).cuda()(x)
        assert _C.last_cuda_forward_path() == "gemm"             # projection
        lstm(randn(50, 64, 32, dtype=torch.float32).cuda())
        assert _C.last_cuda_forward_path() == "gemm"             # batch 64


def test_long_sequence_is_race_free():
    """Many grid barriers in a row: the persistent path matches cuDNN over 1000 steps and
    gives bit-identical results run after run (a missing barrier shows as a moving error)."""
    ref, ours = twin_lstms(input_size=64, hidden_size=256)
    ref, ours = ref.cuda(), ours.cuda()
    x = randn(1000, 16, 64, dtype=torch.float32).cuda()
    with torch.no_grad():
        runs = [ours(x) for _ in range(3)]
        assert _C.last_cuda_forward_path() == "persistent"
        expected = ref(x)
    for out, (h, c) in runs[1:]:
        assert torch.equal(out, runs[0][0]) and torch.equal(h, runs[0][1][0])
    assert rel_err(runs[0][0], expected[0]) < 1e-4
    assert rel_err(runs[0][1][1], expected[1][1]) < 1e-4


# ------------------------------------------------------------------ vs cuDNN (nn.LSTM)
GRID = list(itertools.product([1, 2], [False, True], [False, True], [0, P], [True, False]))


def run_and_grad(model, x, hx, g):
    out, (h, c) = model(x, hx)
    loss = (out * g[0]).sum() + (h * g[1]).sum() + (c * g[2]).sum()
    grads = torch.autograd.grad(loss, [x, *hx, *model.parameters()])
    return (out, h, c), grads


@pytest.mark.parametrize("path", ["auto", "gemm"])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,proj_size,bias", GRID)
def test_matches_cudnn(path, num_layers, bidirectional, batch_first, proj_size, bias):
    ref, ours = twin_lstms(input_size=I, hidden_size=H, num_layers=num_layers, bias=bias,
                           batch_first=batch_first, bidirectional=bidirectional,
                           proj_size=proj_size)
    ref, ours = ref.cuda(), ours.cuda()
    D, Hout = 2 if bidirectional else 1, proj_size or H
    x = randn(*((B, T, I) if batch_first else (T, B, I)), dtype=torch.float32).cuda()
    x.requires_grad_()
    hx = tuple(randn(num_layers * D, B, n, dtype=torch.float32).cuda().requires_grad_()
               for n in (Hout, H))
    out_shape = (B, T, D * Hout) if batch_first else (T, B, D * Hout)
    g = [randn(*s, dtype=torch.float32).cuda()
         for s in (out_shape, (num_layers * D, B, Hout), (num_layers * D, B, H))]
    set_path(path)
    (o1, g1), (o2, g2) = run_and_grad(ref, x, hx, g), run_and_grad(ours, x, hx, g)
    for a, e in zip(o2 + g2, o1 + g1):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("path", ["auto", "gemm"])
@pytest.mark.parametrize("proj_size", [0, P])
def test_reduced_precision_vs_float64(dtype, path, proj_size):
    """float16/bfloat16 (cell state and accumulation in float32) against the float64 CPU
    kernels with the same weights: outputs, states and every gradient."""
    torch.manual_seed(0)
    ref = torchlstm.LSTM(16, 32, num_layers=2, bidirectional=True, proj_size=proj_size,
                         dtype=torch.float64)
    ours = torchlstm.LSTM(16, 32, num_layers=2, bidirectional=True, proj_size=proj_size)
    ours.load_state_dict(ref.state_dict())
    ours = ours.to("cuda", dtype)
    x64 = randn(20, 8, 16, requires_grad=True)
    x = x64.detach().to("cuda", dtype).requires_grad_()
    set_path(path)
    out, (h, c) = ours(x)
    out64, (h64, c64) = ref(x64)
    assert out.dtype == h.dtype == c.dtype == dtype
    g = [randn(*t.shape) for t in (out64, h64, c64)]
    grads = torch.autograd.grad((out * g[0].to(out)).sum() + (h * g[1].to(h)).sum()
                                + (c * g[2].to(c)).sum(), [x, *ours.parameters()])
    grads64 = torch.autograd.grad((out64 * g[0]).sum() + (h64 * g[1]).sum() + (c64 * g[2]).sum(),
                                  [x64, *ref.parameters()])
    tol_out, tol_grad = REL_TOL[dtype]
    for name, a, e in zip(["output", "h_n", "c_n"], (out, h, c), (out64, h64, c64)):
        assert rel_err(a, e) < tol_out, name
    for a, e in zip(grads, grads64):
        assert a.dtype == dtype
        assert rel_err(a, e) < tol_grad


@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence_matches_cudnn(enforce_sorted):
    ref, ours = twin_lstms(input_size=I, hidden_size=H, num_layers=2, bidirectional=True)
    ref, ours = ref.cuda(), ours.cuda()
    lengths = torch.tensor([9, 9, 7, 3, 1]) if enforce_sorted else torch.tensor([3, 9, 1, 7, 2])
    padded = randn(9, 5, I, dtype=torch.float32).cuda()
    packed = pack_padded_sequence(padded, lengths, enforce_sorted=enforce_sorted)
    (o1, (h1, c1)), (o2, (h2, c2)) = ref(packed), ours(packed)
    torch.testing.assert_close(o2.data, o1.data, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h2, h1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c2, c1, rtol=1e-4, atol=1e-5)
    assert torch.equal(pad_packed_sequence(o2)[1], lengths)


@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_nn_lstmcell(bias):
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(I, H, bias=bias).cuda()
    ours = torchlstm.LSTMCell(I, H, bias=bias).cuda()
    ours.load_state_dict(ref.state_dict())
    x = randn(B, I, dtype=torch.float32).cuda().requires_grad_()
    hx = tuple(randn(B, H, dtype=torch.float32).cuda().requires_grad_() for _ in range(2))
    (h1, c1), (h2, c2) = ref(x, hx), ours(x, hx)
    g1 = torch.autograd.grad(h1.sum() + c1.pow(2).sum(), [x, *hx, *ref.parameters()])
    g2 = torch.autograd.grad(h2.sum() + c2.pow(2).sum(), [x, *hx, *ours.parameters()])
    for a, e in zip((h2, c2) + g2, (h1, c1) + g1):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ the op contract on CUDA
@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("proj,masked,reverse", [(False, False, False), (False, True, True),
                                                 (True, True, False)])
def test_gradcheck_cuda(path, proj, masked, reverse):
    if proj and path == "persistent":
        pytest.skip("the persistent kernel has no projection")
    args = to_device(layer_args(proj, True, random_mask() if masked else None, reverse), "cuda")
    set_path(path)

    def f(*a):
        return ops.layer_forward(*a)[:3]
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("proj,masked", [(False, False), (True, True)])
def test_opcheck_cuda(dtype, proj, masked):
    args = to_device(layer_args(proj=proj, mask=random_mask() if masked else None), "cuda", dtype)
    torch.library.opcheck(ops.layer_forward, args)
    # layer_inference has no autograd formula (the modules call it only without grad)
    torch.library.opcheck(ops.layer_inference, [a.detach() if isinstance(a, torch.Tensor) else a
                                                for a in args],
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    with torch.no_grad():
        out, h, c, gates, cs = ops.layer_forward(*args)
    assert cs.dtype == torch.float32  # cell states kept (and saved) in float32
    det = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    bw = (torch.randn_like(out), torch.randn_like(h), torch.randn_like(c), *det[:5],
          det[7], det[8], out, gates, cs, False, 0, 1)
    torch.library.opcheck(ops.layer_backward, bw)
    one_step = (det[0][:1], *det[1:])  # what LSTMCell runs
    torch.library.opcheck(ops.layer_inference, one_step)


def test_compile_fullgraph_cuda():
    torch._dynamo.reset()
    lstm = torchlstm.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True).cuda()
    x = randn(B, T, I, dtype=torch.float32).cuda().requires_grad_()

    def f(x):
        y, (h, c) = lstm(x)
        return y.sum() + h.pow(2).sum() + c.sum()
    eager = f(x)
    ge = torch.autograd.grad(eager, [x, *lstm.parameters()])
    compiled = torch.compile(f, fullgraph=True)
    out = compiled(x)
    gc = torch.autograd.grad(out, [x, *lstm.parameters()])
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for a, e in zip(gc, ge):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(dtype):
    """Under torch.autocast the LSTM runs in the autocast dtype, as cuDNN's nn.LSTM does;
    the float32 parameters get float32 gradients."""
    lstm = torchlstm.LSTM(I, H, num_layers=2).cuda()
    ref = torch.nn.LSTM(I, H, num_layers=2).cuda()
    ref.load_state_dict(lstm.state_dict())
    x = randn(T, B, I, dtype=torch.float32).cuda()
    with torch.autocast("cuda", dtype=dtype):
        out, (h, c) = lstm(x)
        out_ref, _ = ref(x)
    assert out.dtype == dtype and out_ref.dtype == dtype
    assert rel_err(out, lstm(x)[0]) < REL_TOL[dtype][0] * 4
    grads = torch.autograd.grad(out.float().sum() + c.float().sum(), list(lstm.parameters()))
    for g, p in zip(grads, lstm.parameters()):
        assert g.dtype == p.dtype == torch.float32 and torch.isfinite(g).all()


def test_errors_name_the_argument():
    args = to_device(layer_args(), "cuda")
    bad = list(args)
    bad[1] = bad[1].cpu()
    with pytest.raises(RuntimeError, match="h0 must be on the device of input"):
        ops.layer_forward(*bad)
    proj = to_device(layer_args(proj=True), "cuda")
    set_path("persistent")
    with pytest.raises(RuntimeError, match="persistent forward path was forced"):
        ops.layer_forward(*proj)
    set_path("auto")
    args = to_device(layer_args(), "cuda", torch.float32)
    fwd = ops.layer_forward(*args)
    bad_cs = fwd[4].double()  # cell states of a float32 layer are float32
    with pytest.raises(TypeError, match="cs must have dtype"):
        ops.layer_backward(None, None, None, *[a.detach() for a in args[:5]], None, None, fwd[0],
                           fwd[3], bad_cs, False, 0, 1)


# ------------------------------------------------------------------ cases only a GPU shows
# What the CPU emulation (tests/test_cuda_emu.py) cannot see: real shared-memory limits
# and the >48 KiB opt-in, real cuBLAS, graph capture, the memory model.
def _forward_vs_cpu(Hn, Bn, dtype, path, T_=12, masked=False, reg_which=None, **kw):
    torch.manual_seed(0)
    In = 16
    args = list(layer_args(mask=mask_for(T_, Bn) if masked else None, T=T_, B=Bn,
                           requires_grad=False, **kw))
    # resize to (I, H) = (In, Hn): the support helper's sizes are small
    args[0] = randn(T_, Bn, In)
    args[1], args[2] = randn(Bn, Hn, scale=0.5), randn(Bn, Hn, scale=0.5)
    args[3], args[4] = randn(4 * Hn, In, scale=0.2), randn(4 * Hn, Hn, scale=0.2)
    args[5], args[6] = randn(4 * Hn, scale=0.2), randn(4 * Hn, scale=0.2)
    reg = list(regularizers(T=T_, B=Bn, I=In, H=Hn, Hout=Hn, which=reg_which)) if reg_which else []
    expected = ops.layer_forward(*args, *reg)
    set_path(path)
    got = ops.layer_forward(*to_device(args + reg, "cuda", dtype))
    assert _C.last_cuda_forward_path() == path
    tol = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    for name, a, e in zip(["out", "h_n", "c_n"], got[:3], expected[:3]):
        assert rel_err(a, e) < tol, name


@pytest.mark.parametrize("Hn,dtype", [(768, torch.float32), (768, torch.bfloat16),
                                      (1024, torch.float32)])
def test_persistent_kernel_beyond_48k_shared_memory(Hn, dtype):
    plan = _C.persistent_plan(16, Hn, False, torch.tensor([], dtype=dtype).element_size(), 4,
                              torch.cuda.get_device_properties(0).multi_processor_count,
                              227 * 1024, 1024)
    assert plan["ok"], plan["why"]
    if plan["smem_bytes"] <= 48 * 1024:
        pytest.skip(f"this plan needs only {plan['smem_bytes']} bytes")
    _forward_vs_cpu(Hn, 16, dtype, "persistent")


@pytest.mark.parametrize("Hn", [40, 265])
@pytest.mark.parametrize("Bn", [1, 2, 16])
@pytest.mark.parametrize("path", ["gemm", "persistent"])
def test_odd_hidden_sizes_and_batches(Hn, Bn, path):
    _forward_vs_cpu(Hn, Bn, torch.float32, path, masked=True)


def test_float16_persistent_with_masks_and_regularizers():
    _forward_vs_cpu(64, 4, torch.float16, "persistent", masked=True, reg_which="iorc")


def test_cuda_graph_capture_takes_the_gemm_path_and_replays():
    lstm = torchlstm.LSTM(32, 64).cuda()
    x = randn(20, 4, 32, dtype=torch.float32).cuda()
    with torch.no_grad():
        eager = lstm(x)[0].clone()
        static_x = x.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up on a side stream, as the CUDA graph docs ask
            lstm(static_x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_out = lstm(static_x)[0]
        assert _C.last_cuda_forward_path() == "gemm"  # no cooperative launch in a capture
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, eager)
        static_x.copy_(x * 0.5)
        g.replay()
        torch.cuda.synchronize()
        assert rel_err(static_out, lstm(x * 0.5)[0]) < 1e-6


@pytest.mark.parametrize("path", ["gemm", "persistent"])
def test_non_contiguous_weights(path):
    args = to_device(layer_args(requires_grad=False), "cuda", torch.float32)
    strided = list(args)
    for k in (3, 4):  # w_ih, w_hh as transposed copies' transposes (same values, strided)
        strided[k] = args[k].t().contiguous().t()
        assert not strided[k].is_contiguous()
    set_path(path)
    for a, e in zip(ops.layer_forward(*strided), ops.layer_forward(*args)):
        assert torch.equal(a, e)
