"""The REAL CUDA code (csrc/cuda: host code and kernels) on an emulated device
(csrc/cuda_emu, built into torchlstm._cuda_emu by `make test-cuda-emu`): the ops
torch.ops.torchlstm_emu.* take CPU tensors and run the CUDA host code, the cuBLAS calls (a
checking stand-in) and every kernel (CUDA threads as fibers). Checked against the CPU ops
(torch.ops.torchlstm.*) and the float64 reference (torchlstm/_reference.py), on both
forward paths, with the path choice and its fallbacks. Skipped where the emulation is not built.

Every test runs with torch.empty NaN-filled (deterministic mode's fill_uninitialized_memory),
so an output element a kernel forgets to write is a NaN in the comparison; the emulated
shared memory starts as NaN bytes too."""
import pytest
import torch

from support import lstm_layer, randn, regularizers, rel_err
from torchlstm import activations

emu = pytest.importorskip("torchlstm._cuda_emu", reason="torchlstm._cuda_emu not built "
                          "(make test-cuda-emu builds it)")
ops, eops = torch.ops.torchlstm, torch.ops.torchlstm_emu
TANH, SIGMOID = activations.resolve("tanh"), activations.resolve("sigmoid")


@pytest.fixture(autouse=True)
def _emulated_h100_and_outputs_poisoned():
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    emu.set_device("h100")
    emu.set_capture_status("none")
    emu.set_cuda_forward_path("auto")
    torch.manual_seed(0)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.utils.deterministic.fill_uninitialized_memory = saved[2]
        emu.set_device("h100")
        emu.set_capture_status("none")
        emu.set_cuda_forward_path("auto")


# ‖out − ref‖ / ‖ref‖ against float64, per dtype: (outputs, gradients)
REL_TOL = {torch.float64: (1e-12, 1e-11), torch.float32: (2e-6, 2e-5),
           torch.float16: (5e-3, 2e-2), torch.bfloat16: (3e-2, 8e-2)}


def make_args(T=5, B=3, I=6, H=40, P=0, bias=True, masked=False, reverse=False,
              dtype=torch.float64, act="tanh", ract="sigmoid"):
    """layer_forward's arguments (float64 unless dtype), as a list."""
    Hout = P or H
    mask = None
    if masked:
        mask = torch.rand(T, B) > 0.3
        mask[0] = True
        if B > 1:
            mask[:, -1] = False      # a row that never runs
            mask[T // 2:, 0] = False  # right padding
    args = [randn(T, B, I), randn(B, Hout), randn(B, H), randn(4 * H, I, scale=0.4),
            randn(4 * H, Hout, scale=0.4 * (40 / H) ** 0.5),
            randn(4 * H) if bias else None, randn(4 * H) if bias else None,
            randn(Hout, H, scale=0.5) if P else None, mask, reverse,
            activations.resolve(act), activations.resolve(ract)]
    return [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args]


def with_regs(args, which, eval_z=False):
    x, h0, c0 = args[0], args[1], args[2]
    T, B, I = x.shape
    reg = regularizers(T=T, B=B, I=I, H=c0.shape[1], Hout=h0.shape[1], which=which,
                       eval_z=eval_z)
    return list(args) + [r.to(x.dtype) if r is not None else None for r in reg]


def double(args):
    return [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args]


def reference(args):
    """(out, h_n, c_n) of the float64 reference (torchlstm/_reference.py)."""
    a = double(args)
    regs = dict(zip(["input_keep", "recurrent_keep", "zoneout_h", "zoneout_c"], a[12:16]))
    return lstm_layer(*a[:9], reverse=a[9], activation=activations.name_of(a[10]),
                      recurrent_activation=activations.name_of(a[11]), **regs)


def run(path, args):
    emu.set_cuda_forward_path(path)
    res = eops.layer_forward(*args)
    assert emu.last_cuda_forward_path() == path
    return res


def grads_in(res, seed=1):
    out, h, c = res[:3]
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype) for t in (out, h, c)]


def backward(op_ns, args, res, grads):
    """layer_backward of the namespace's ops, for layer_forward's args and results."""
    a = list(args) + [None] * (16 - len(args))
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse, act, ract = a[:12]
    out, _, _, gates, cs = res
    return op_ns.layer_backward(grads[0], grads[1], grads[2], x, h0, c0, w_ih, w_hh, w_hr, mask,
                                out, gates, cs, reverse, act, ract, *a[12:16])


# ------------------------------------------------------------------ float64: = CPU ops
@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("proj,bias,masked,reverse", [
    (False, True, False, False), (False, False, True, True), (False, True, True, False),
    (True, True, False, True), (True, False, True, False)])
def test_forward_and_backward_match_cpu_float64(path, proj, bias, masked, reverse):
    if proj and path == "persistent":
        pytest.skip("the persistent kernel has no projection (launch_plan.h)")
    args = make_args(P=7 if proj else 0, bias=bias, masked=masked, reverse=reverse)
    got, want = run(path, args), ops.layer_forward(*args)
    for name, a, e in zip(["out", "h_n", "c_n", "gates", "cs"], got, want):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert rel_err(a, e) < 1e-13, name
    for name, a, e in zip(["out", "h_n", "c_n"], got, reference(args)):
        assert rel_err(a, e) < 1e-12, name
    g = grads_in(got)
    for k, (a, e) in enumerate(zip(backward(eops, args, got, g), backward(ops, args, want, g))):
        if e.numel() == 0:
            assert a.numel() == 0
        else:
            assert rel_err(a, e) < 1e-12, f"grad {k}"


def test_backward_matches_autograd_of_reference():
    """layer_backward (emulated) = autograd through the float64 reference loop."""
    args = with_regs(make_args(P=5, masked=True, reverse=True), "iorc")
    res = run("gemm", args)
    g = grads_in(res)
    got = backward(eops, args, res, g)
    leaves = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor)
              and a.is_floating_point() and 0 <= i <= 7 else a for i, a in enumerate(args)]
    out, h, c = reference(leaves)
    loss = (out * g[0]).sum() + (h * g[1]).sum() + (c * g[2]).sum()
    wrt = [leaves[i] for i in (0, 1, 2, 3, 4, 7)]
    want = torch.autograd.grad(loss, wrt)
    for k, (i, e) in enumerate(zip((0, 1, 2, 3, 4, 6), want)):
        assert rel_err(got[i], e) < 1e-11, f"grad {k}"


@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("which,eval_z,proj,masked,reverse", [
    ("iorc", False, False, True, False), ("ir", False, False, False, True),
    ("oc", True, False, True, True), ("iorc", False, True, True, False),
    ("oc", False, True, False, True)])
def test_regularizers_match_cpu_float64(path, which, eval_z, proj, masked, reverse):
    if proj and path == "persistent":
        pytest.skip("the persistent kernel has no projection")
    args = with_regs(make_args(P=6 if proj else 0, masked=masked, reverse=reverse), which, eval_z)
    got, want = run(path, args), ops.layer_forward(*args)
    for name, a, e in zip(["out", "h_n", "c_n", "gates", "cs"], got, want):
        assert rel_err(a, e) < 1e-13, name
    for name, a, e in zip(["out", "h_n", "c_n"], got, reference(args)):
        assert rel_err(a, e) < 1e-12, name
    g = grads_in(got)
    for k, (a, e) in enumerate(zip(backward(eops, args, got, g), backward(ops, args, want, g))):
        if e.numel():
            assert rel_err(a, e) < 1e-12, f"grad {k}"


@pytest.mark.parametrize("act,ract", [("relu", "hard_sigmoid"), ("gelu", "sigmoid"),
                                      ("softsign", "sparse_sigmoid")])
@pytest.mark.parametrize("path", ["gemm", "persistent"])
def test_other_activations_match_cpu(act, ract, path):
    args = make_args(act=act, ract=ract, masked=True)
    got, want = run(path, args), ops.layer_forward(*args)
    for a, e in zip(got, want):
        assert rel_err(a, e) < 1e-12


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("T,B,H", [(5, 1, 40), (4, 2, 265), (5, 3, 40), (1, 2, 40),
                                   (4, 16, 265), (6, 16, 40), (1, 1, 265)])
def test_odd_sizes_float32(path, T, B, H):
    """H = 40 and 265: blocks with idle trailing warps (H not a multiple of the units per
    block) and lanes beyond B; B = 1 .. 16; T = 1 (the persistent path, forced)."""
    args = make_args(T=T, B=B, H=H, I=9, masked=B > 1, dtype=torch.float32)
    got = run(path, args)
    want = ops.layer_forward(*double(args))
    for name, a, e in zip(["out", "h_n", "c_n", "gates", "cs"], got, want):
        assert rel_err(a, e) < REL_TOL[torch.float32][0], name
    g = grads_in(got)
    gd = [t.double() for t in g]
    for k, (a, e) in enumerate(zip(backward(eops, args, got, g),
                                   backward(ops, double(args), want, gd))):
        if e.numel():
            assert rel_err(a, e) < REL_TOL[torch.float32][1], f"grad {k}"


def test_persistent_above_48k_shared_memory():
    """H = 768: 4·U·H float32 weights per block = 72 KiB of shared memory (opt-in)."""
    args = make_args(T=4, B=2, H=768, I=8, dtype=torch.float32)
    got = run("persistent", args)
    want = ops.layer_forward(*double(args))
    for a, e in zip(got, want):
        assert rel_err(a, e) < REL_TOL[torch.float32][0]


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("regs", [False, True])
def test_dtypes_vs_float64(dtype, path, regs):
    args = make_args(T=6, B=3, H=40, masked=True, reverse=regs, dtype=dtype)
    if regs:
        args = with_regs(args, "iorc")
    got = run(path, args)
    want = ops.layer_forward(*double(args))  # the same (rounded) inputs, in float64
    tol_out, tol_grad = REL_TOL[dtype]
    for name, a, e in zip(["out", "h_n", "c_n"], got, want):
        assert a.dtype == dtype
        assert rel_err(a, e) < tol_out, name
    assert got[4].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert rel_err(got[4], want[4]) < tol_out  # the saved cell states, in float32
    g = grads_in(got)
    gd = [t.double() for t in g]
    for k, (a, e) in enumerate(zip(backward(eops, args, got, g),
                                   backward(ops, double(args), want, gd))):
        if e.numel():
            assert a.dtype == dtype
            assert rel_err(a, e) < tol_grad, f"grad {k}"


# ------------------------------------------------------------------ the other ops
@pytest.mark.parametrize("path", ["gemm", "persistent"])
def test_layer_inference_equals_forward(path):
    args = with_regs(make_args(masked=True), "rc")
    emu.set_cuda_forward_path(path)
    inf = eops.layer_inference(*args)
    assert emu.last_cuda_forward_path() == path
    fwd = eops.layer_forward(*args)
    for a, e in zip(inf, fwd[:3]):
        assert torch.equal(a, e)


# ------------------------------------------------------------------ path choice, fallbacks
def test_auto_path_choice():
    run_auto = lambda **kw: (eops.layer_forward(*make_args(**kw)), emu.last_cuda_forward_path())[1]
    assert run_auto(T=5) == "persistent"
    assert run_auto(T=3) == "gemm"           # too short to repay the persistent kernel
    assert run_auto(T=5, P=4) == "gemm"      # projection
    assert run_auto(T=5, B=9) == "gemm"      # float64: at most 8 rows
    assert emu.stats()["cooperative_launches"] >= 1


def test_small_gpu_falls_back_when_weights_do_not_fit():
    """A 16-SM GPU with 48 KiB per block: H = 200 in float64 needs 4·13·200·8 = 81 KiB of
    weights per block."""
    emu.set_device("small")
    assert emu.device_properties()["multiProcessorCount"] == 16
    args = make_args(T=5, B=2, H=200)
    out = eops.layer_forward(*args)
    assert emu.last_cuda_forward_path() == "gemm"
    assert rel_err(out[0], ops.layer_forward(*args)[0]) < 1e-13
    emu.set_cuda_forward_path("persistent")
    with pytest.raises(RuntimeError, match="weights do not fit in shared memory"):
        eops.layer_forward(*args)


def test_fallback_when_grid_cannot_be_resident():
    """The plan fits (one block per SM, 48 KiB opt-in) but the occupancy API says a block
    does not fit on a multiprocessor (8 KiB of shared memory per SM): GEMM path, or an
    error when the persistent path is forced."""
    emu.set_device("small", sharedMemPerMultiprocessor=8 * 1024)
    args = make_args(T=5, B=4, H=64, I=5)  # U = 4: 4·4·64·8 + 4·64·8 = 10 KiB per block
    out = eops.layer_forward(*args)
    assert emu.last_cuda_forward_path() == "gemm"
    assert rel_err(out[0], ops.layer_forward(*args)[0]) < 1e-13
    emu.set_cuda_forward_path("persistent")
    with pytest.raises(RuntimeError, match="grid does not fit"):
        eops.layer_forward(*args)


@pytest.mark.parametrize("status", ["active", "invalidated"])
def test_capturing_stream_takes_gemm_path(status):
    emu.set_capture_status(status)
    args = make_args(T=6)
    out = eops.layer_forward(*args)
    assert emu.last_cuda_forward_path() == "gemm"
    assert rel_err(out[0], ops.layer_forward(*args)[0]) < 1e-13
    emu.set_cuda_forward_path("persistent")
    with pytest.raises(RuntimeError, match="capturing a graph"):
        eops.layer_forward(*args)


def test_no_cooperative_launch_takes_gemm_path():
    emu.set_device("h100", cooperativeLaunch=0)
    eops.layer_forward(*make_args(T=6))
    assert emu.last_cuda_forward_path() == "gemm"


# ------------------------------------------------------------------ the emulated device
@pytest.mark.parametrize("name,error,ok", [
    ("smem_no_optin", "cudaErrorInvalidValue", False),   # > 48 KiB without the opt-in
    ("smem_optin", "cudaSuccess", True),
    ("smem_optin_too_large", "cudaErrorInvalidValue", None),
    ("block_sum", "cudaSuccess", True),                  # static __shared__, __syncthreads
    ("warp_xor", "cudaSuccess", True),
    ("divergent_sync", "cudaErrorLaunchFailure", None),  # deadlock: not every thread syncs
    ("partial_mask", "cudaErrorLaunchFailure", None),    # mask names absent lanes
    ("grid_sync_ordinary", "cudaErrorLaunchFailure", None),
    ("grid_sync", "cudaSuccess", True),                  # 8 blocks meet at grid.sync
    ("grid_too_large", "cudaErrorCooperativeLaunchTooLarge", None),
    ("too_many_threads", "cudaErrorInvalidConfiguration", None),
])
def test_emulated_device_rules(name, error, ok):
    r = emu.selftest(name)
    assert r["error"] == error, r
    if ok is not None:
        assert r["ok"] == ok, r


def test_emulated_cublas_checks_arguments():
    r = emu.selftest("cublas_lda")
    assert (r["bad_lda"], r["bad_ldb_transposed"], r["bad_types"], r["good"]) == (7, 7, 15, 0)
    assert r["ok"]  # beta = 0: C's NaNs never read


def test_block_threads_mode_matches():
    """Blocks on OS threads of their own (the ThreadSanitizer build's mode) = one thread."""
    args = make_args(T=5, B=3, H=40, masked=True)
    one = run("persistent", args)
    before = emu.block_threads()
    emu.set_block_threads(True)
    try:
        many = run("persistent", args)
        gemm = run("gemm", args)
    finally:
        emu.set_block_threads(before)
    for a, b in zip(one, many):
        assert torch.equal(a, b)
    assert rel_err(gemm[0], one[0]) < 1e-13


# cuBLAS' settings follow torch's (csrc/cuda/cublas_gemm.h): TF32 for float32 only where
# torch.backends.cuda.matmul allows it; 16-bit split-K reductions only where
# allow_fp16/bf16_reduced_precision_reduction allow them (else the handle's math mode
# forbids them for the call).
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32 = 68, 77
DISALLOW_REDUCED_PRECISION_REDUCTION = 16


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_cublas_tf32_follows_torch(allow_tf32):
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        emu.set_cuda_forward_path("gemm")
        eops.layer_forward(*make_args(dtype=torch.float32))
        want = CUBLAS_COMPUTE_32F_FAST_TF32 if allow_tf32 else CUBLAS_COMPUTE_32F
        assert emu.stats()["last_compute_type"] == want
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("dtype,flag", [
    (torch.float16, "allow_fp16_reduced_precision_reduction"),
    (torch.bfloat16, "allow_bf16_reduced_precision_reduction")])
@pytest.mark.parametrize("allowed", [False, True])
def test_cublas_reduced_precision_reduction_follows_torch(dtype, flag, allowed):
    saved = getattr(torch.backends.cuda.matmul, flag)
    setattr(torch.backends.cuda.matmul, flag, allowed)
    try:
        emu.set_cuda_forward_path("gemm")
        eops.layer_forward(*make_args(dtype=dtype))
        s = emu.stats()
        assert s["last_compute_type"] == CUBLAS_COMPUTE_32F
        assert bool(s["last_math_mode"] & DISALLOW_REDUCED_PRECISION_REDUCTION) == (not allowed)
    finally:
        setattr(torch.backends.cuda.matmul, flag, saved)
