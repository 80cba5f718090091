"""The CUDA code (csrc/cuda: host code and kernels) against the CPU kernels and float64, on
every place it can run: a GPU (torch.ops.torchlstm on CUDA tensors) and the CPU emulation
of the device (torch.ops.torchlstm_emu on CPU tensors, built by make test; see
csrc/cuda_emu). The same cases on both: the `cuda` fixture says where. Where neither is
available (no GPU, emulation not built) its parameter is skipped; make test builds the
emulation, so these always run in CI.

torch.empty is NaN-filled in every test (deterministic mode's fill_uninitialized_memory),
so an output element a kernel forgets to write is a NaN in the comparison; TF32 is off
(the fixture, shared with test_variants.py: conftest.py)."""
import pytest
import torch

from torchlstm import activations
from support import (BOUNDED, CASES, forward_and_grads, layer_args,
                     mask_for, random_mask, regularizers, rel_err)

ops = torch.ops.torchlstm
I, H, P, T, B = 5, 12, 4, 9, 5


@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("proj,bias,masked,reverse", CASES)
def test_layer_matches_cpu_float64(cuda, path, proj, bias, masked, reverse):
    if proj and path == "persistent":
        pytest.skip("the persistent kernel has no projection (launch_plan.h)")
    args = layer_args(proj, bias, random_mask() if masked else None, reverse)
    (cpu, gcpu) = forward_and_grads(ops, args)
    cuda.set_path(path)
    (gpu, ggpu) = forward_and_grads(cuda.ops, cuda.to(args))
    assert cuda.last_path() == path
    for name, a, e in zip(["out", "h_n", "c_n", "gates", "cs"], gpu, cpu):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert rel_err(a, e) < 1e-12, name  # gates of masked steps: zero on both
    for k, (a, e) in enumerate(zip(ggpu, gcpu)):
        assert rel_err(a, e) < 1e-11, f"grad {k}"


@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("act,ract", [(a, "sigmoid") for a in activations.FUSED]
                         + [("tanh", r) for r in activations.FUSED])
def test_every_activation_matches_cpu(cuda, act, ract, path):
    # unbounded activations: small weights and states keep c and h finite (as test_ops)
    scale = 1.0 if {act, ract} <= BOUNDED else 0.15 if "exponential" in (act, ract) else 0.4
    args = layer_args(act=act, ract=ract, scale=scale)
    cpu, gcpu = forward_and_grads(ops, args)
    cuda.set_path(path)
    gpu, ggpu = forward_and_grads(cuda.ops, cuda.to(args))
    assert cuda.last_path() == path
    for a, e in zip(gpu[:3] + tuple(ggpu), cpu[:3] + tuple(gcpu)):
        assert rel_err(a, e) < 1e-11


@pytest.mark.parametrize("path", ["gemm", "persistent"])
@pytest.mark.parametrize("proj,masked,reverse", [(False, False, False), (False, True, True),
                                                 (True, True, False), (True, False, True)])
@pytest.mark.parametrize("which,eval_z", [("iorc", False), ("ir", False), ("oc", True)])
def test_regularizers_match_cpu_float64(cuda, path, proj, masked, reverse, which, eval_z):
    """Keras dropout and zoneout (the keep masks and z given to the op) on CUDA = CPU."""
    if proj and path == "persistent":
        pytest.skip("the persistent kernel has no projection")
    args = layer_args(proj, True, random_mask() if masked else None, reverse)
    reg = regularizers(T=args[0].shape[0], B=args[0].shape[1], I=args[0].shape[2],
                       H=args[2].shape[1], Hout=args[1].shape[1], which=which, eval_z=eval_z)
    cpu, gcpu = forward_and_grads(ops, list(args) + list(reg))
    cuda.set_path(path)
    gpu, ggpu = forward_and_grads(cuda.ops, cuda.to(list(args) + list(reg)))
    assert cuda.last_path() == path
    for a, e in zip(gpu + tuple(ggpu), cpu + tuple(gcpu)):
        assert rel_err(a, e) < 1e-11




# ------------------------------------------------------------------ the two forward paths
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("Bn", [1, 3, 16])
@pytest.mark.parametrize("masked,reverse", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("ract", ["sigmoid", "hard_sigmoid"])
def test_persistent_and_gemm_paths_agree(cuda, dtype, Bn, masked, reverse, ract):
    if dtype == torch.float64 and Bn > 8:
        pytest.skip("float64 persistent kernel: batch <= 8")
    args = cuda.to(layer_args(mask=mask_for(T, Bn) if masked else None, reverse=reverse,
                              ract=ract, T=T, B=Bn, requires_grad=False), dtype)
    results = {}
    for path in ("gemm", "persistent"):
        cuda.set_path(path)
        for op in ("layer_forward", "layer_inference"):
            results[path, op] = getattr(cuda.ops, op)(*args)
            assert cuda.last_path() == path
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    for op in ("layer_forward", "layer_inference"):
        for a, e in zip(results["persistent", op], results["gemm", op]):
            assert a.dtype == e.dtype and a.shape == e.shape
            assert rel_err(a, e) < tol, op
    for a, e in zip(results["persistent", "layer_inference"], results["persistent", "layer_forward"]):
        assert torch.equal(a, e)  # inference = training forward, bit for bit


