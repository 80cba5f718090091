"""The CUDA launch logic (csrc/cuda/launch_plan.h), checked on the CPU: which forward path
runs and how the persistent kernel is laid out, for given sizes and device limits. The
limits are an H100's and an A100's as cudaGetDeviceProperties reports them."""
import pytest

from torchlstm import _C

H100 = dict(sm_count=132, smem_per_block=232448, max_threads_per_block=1024)
A100 = dict(sm_count=108, smem_per_block=232448, max_threads_per_block=1024)


def plan(B, H, proj=False, elem=4, acc_elem=4, dev=H100):
    return _C.persistent_plan(B, H, proj, elem, acc_elem, **dev)


@pytest.mark.parametrize("B", [1, 4, 16])
@pytest.mark.parametrize("H", [1, 64, 256, 768, 1024])
def test_layout_covers_every_unit_once(B, H):
    p = plan(B, H)
    assert p["ok"], p["why"]
    U = p["units_per_block"]
    assert p["blocks"] <= H100["sm_count"]           # one block per multiprocessor
    assert (p["blocks"] - 1) * U < H <= p["blocks"] * U  # every unit, no empty block
    assert p["threads"] == 32 * U                     # a warp per unit
    assert p["smem_bytes"] == 4 * U * H * 4 + B * H * 4
    assert p["max_batch"] >= B and p["max_batch"] in (1, 2, 4, 8, 16)


def test_issue_sizes():
    # T=1024, B=16, I=H=768 on an H100: 6 units a block, 128 blocks, 120 KiB of weights+state
    p = plan(16, 768)
    assert (p["ok"], p["units_per_block"], p["blocks"], p["threads"]) == (True, 6, 128, 192)
    assert p["smem_bytes"] == 4 * 6 * 768 * 4 + 16 * 768 * 4
    # B=1/4/16, H=256: two units a block
    for B in (1, 4, 16):
        p = plan(B, 256)
        assert p["ok"] and p["units_per_block"] == 2 and p["blocks"] == 128
    # bfloat16 weights take half the shared memory
    assert plan(16, 768, elem=2)["smem_bytes"] == 4 * 6 * 768 * 2 + 16 * 768 * 4


def test_depends_on_the_device():
    assert plan(16, 768, dev=A100)["units_per_block"] == 8  # ceil(768 / 108)
    small = dict(H100, smem_per_block=48 * 1024)
    p = plan(16, 768, dev=small)
    assert not p["ok"] and "shared memory" in p["why"]


@pytest.mark.parametrize("kw, why", [
    (dict(B=4, H=256, proj=True), "projection"),
    (dict(B=17, H=256), "batch"),
    (dict(B=9, H=256, elem=8, acc_elem=8), "batch"),   # float64: at most 8 rows
    (dict(B=16, H=4096), "hidden size"),               # 32 warps a block is over the 512-thread bound
    (dict(B=16, H=2048, elem=8, acc_elem=8), "batch"),
])
def test_falls_back_to_gemm(kw, why):
    p = plan(**kw)
    assert not p["ok"] and why in p["why"]


def test_float64_weights_take_twice_the_room():
    assert plan(8, 512, elem=8, acc_elem=8)["ok"]
    assert plan(8, 1024)["ok"]                                # float32: 4*8*1024*4 B fits
    p = plan(8, 1024, elem=8, acc_elem=8)                     # float64: 4*8*1024*8 B > 227 KiB
    assert not p["ok"] and "shared memory" in p["why"]


def test_path_setting_roundtrip():
    assert _C.cuda_forward_path() == "auto"
    try:
        for p in ("gemm", "persistent", "auto"):
            _C.set_cuda_forward_path(p)
            assert _C.cuda_forward_path() == p
    finally:
        _C.set_cuda_forward_path("auto")
    with pytest.raises(ValueError, match="'auto', 'gemm' or 'persistent'"):
        _C.set_cuda_forward_path("fast")
