"""The CPU time loops' GEMM engines (csrc/cpu/panel_gemm.h, blas.h): torchlstm's own
register-blocked micro-kernels (AVX2, AVX-512) over weights packed once, and BLAS. Each
engine this CPU can run is tested on its own (torchlstm._C.set_cpu_gemm): the kernel
itself against float64 matrix products at the shapes that reach every tile and tail, and
the layer ops (forward, backward, inference, with masks, projection, zoneout, recurrent
dropout, a team of two threads) in float32 against the float64 op."""
import pytest
import torch

from support import cpu_setting, randn, regularizers
from torchlstm import _C

ops = torch.ops.torchlstm
KERNELS = _C.cpu_gemm_kernels()
ENGINES = ["blas"] + KERNELS


def cpu_gemm(name):
    return cpu_setting(_C.set_cpu_gemm, name)


INTEL = "GenuineIntel" in open("/proc/cpuinfo").read()


def auto_engine():
    """What `auto` resolves to here: MKL's packed GEMM on Intel, else the widest kernel."""
    return "blas" if INTEL else (KERNELS[-1] if KERNELS else "blas")


def test_this_cpu_gets_a_kernel_and_auto_follows_the_vendor():
    """Every kernel the CPU can run is built in; `auto` takes MKL's packed GEMM on Intel
    (measured faster there: csrc/cpu/blas.h) and the widest own kernel elsewhere."""
    import platform
    if platform.machine() in ("x86_64", "AMD64"):
        flags = open("/proc/cpuinfo").read().split()
        assert ("avx2" in KERNELS) == ("avx2" in flags and "fma" in flags)
        assert ("avx512" in KERNELS) == ("avx512f" in flags)
    with cpu_gemm("auto"):
        assert _C.cpu_gemm() == auto_engine()
        if not INTEL:
            if "avx512" in KERNELS:  # with AVX-512 turned off, auto takes the AVX2 kernel
                before = _C.set_cpu_avx512(False)
                try:
                    assert _C.cpu_gemm() == "avx2"
                finally:
                    _C.set_cpu_avx512(before)
    with cpu_gemm("blas"):
        assert _C.cpu_gemm() == "blas"


def test_bad_engine_names_are_refused():
    with pytest.raises(ValueError, match="'auto', 'blas', 'avx2', 'avx512'"):
        _C.set_cpu_gemm("mkl")
    assert _C.cpu_gemm() in ENGINES


def test_bad_engine_in_the_environment_is_reported_and_ignored(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", "import torchlstm, torch;"
                        "m = torchlstm.LSTM(3, 4); m(torch.randn(2, 1, 3));"
                        "print(torchlstm._C.cpu_gemm())"],
                       env={**__import__("os").environ, "TORCHLSTM_CPU_GEMM": "fastest"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "TORCHLSTM_CPU_GEMM" in r.stderr and "fastest" in r.stderr
    assert r.stdout.strip() == auto_engine()


@pytest.mark.skipif(not KERNELS, reason="no micro-kernel for this CPU (needs AVX2+FMA)")
@pytest.mark.parametrize("isa", KERNELS)
@pytest.mark.parametrize("M", [1, 2, 5, 6, 7, 11, 12, 13, 25, 64])
@pytest.mark.parametrize("N", [8, 16, 33, 96])
@pytest.mark.parametrize("accumulate", [False, True])
def test_kernel_vs_float64(isa, M, N, accumulate):
    """Every row-tile height (1..12 and their remainders) and panel tail (N not a multiple
    of 16 or 32), K odd; a, w and c views with row strides larger than their widths; w
    given transposed too (the packing of a (N, K) weight). Untouched columns of c stay."""
    K = 37
    for w_t in (False, True):
        a_big = torch.randn(M, K + 3)
        a = a_big[:, 1:K + 1]
        w = torch.randn(N, K).t() if w_t else torch.randn(K, N + 5)[:, :N]
        c_big = torch.randn(M, N + 7)
        c = c_big[:, 2:N + 2]
        before = c_big.clone()
        _C.cpu_panel_gemm(isa, a, w, c, accumulate)
        want = a.double() @ w.double() + (before[:, 2:N + 2].double() if accumulate else 0)
        torch.testing.assert_close(c.double(), want, rtol=1e-5, atol=1e-4)
        assert torch.equal(c_big[:, :2], before[:, :2]) and torch.equal(c_big[:, N + 2:], before[:, N + 2:])


@pytest.mark.skipif(not KERNELS, reason="no micro-kernel for this CPU (needs AVX2+FMA)")
@pytest.mark.parametrize("isa", KERNELS)
def test_kernel_with_zero_depth_or_rows(isa):
    c = torch.randn(4, 20)
    before = c.clone()
    _C.cpu_panel_gemm(isa, torch.randn(4, 0), torch.randn(0, 20), c, True)
    assert torch.equal(c, before)
    _C.cpu_panel_gemm(isa, torch.randn(4, 0), torch.randn(0, 20), c, False)
    assert torch.equal(c, torch.zeros(4, 20))
    _C.cpu_panel_gemm(isa, torch.randn(0, 5), torch.randn(5, 20), torch.empty(0, 20), False)


def _layer_args(T, B, I, H, Hout, proj, masked, reverse, reg):
    mask = None
    if masked:
        mask = torch.rand(T, B) > 0.3
        mask[:, 0] = True
    rk = zh = zc = None
    if reg:
        _, rk, zh, zc = regularizers(T=T, B=B, I=I, H=H, Hout=Hout, which="roc")
    return (randn(T, B, I), randn(B, Hout), randn(B, H), randn(4 * H, I, scale=0.2),
            randn(4 * H, Hout, scale=0.2), randn(4 * H), randn(4 * H),
            randn(Hout, H, scale=0.2) if proj else None, mask, reverse, 0, 1,
            None, rk, zh, zc)


# (T, B, I, H, proj): sequences long enough that the loops pack their weights (the
# kernels' path); B=13 leaves a one-row tile, H=130 / 40 panel tails; (32, 256) and
# (16, 130) run a team of two threads where there are two.
SHAPES = [(70, 13, 20, 40, False), (40, 32, 24, 256, False), (24, 16, 9, 130, True),
          (64, 5, 7, 48, True)]


@pytest.mark.parametrize("split", ["units", "rows"])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("T,B,I_,H_,proj", SHAPES)
@pytest.mark.parametrize("masked,reverse,reg", [(False, False, False), (True, True, False),
                                                (True, False, True)])
def test_layer_ops_float32_vs_float64(engine, T, B, I_, H_, proj, masked, reverse, reg, split):
    """The layer ops in float32 on each engine, with a team's step split by units or by
    batch rows (team.h; forced, in both dtypes) = float64."""
    Hout = 24 if proj else H_
    torch.manual_seed(T * B + H_)
    args64 = _layer_args(T, B, I_, H_, Hout, proj, masked, reverse, reg)
    args32 = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                   for a in args64)
    grads64 = (randn(T, B, Hout), randn(B, Hout), randn(B, H_))
    grads32 = tuple(g.float() for g in grads64)
    mask = args64[8]

    def run(args, grads):
        out, h_n, c_n, gates, cs = ops.layer_forward(*args)
        inf = ops.layer_inference(*args)
        back = ops.layer_backward(*grads, args[0], args[1], args[2], args[3], args[4], args[7],
                                  mask, out, gates, cs, args[9], 0, 1, *args[12:])
        return (out, h_n, c_n) + tuple(inf) + tuple(b for b in back if b is not None and b.numel())

    with cpu_gemm(engine), cpu_setting(_C.set_cpu_split, split):
        assert _C.cpu_gemm() == engine
        got = run(args32, grads32)
        want = run(args64, grads64)
    with cpu_setting(_C.set_cpu_split, "units"):  # and float64 by units
        for a, e in zip(want, run(args64, grads64)):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    for a, e in zip(got, want):  # (weight gradients sum T*B float32 terms)
        torch.testing.assert_close(a.double(), e, rtol=1e-4,
                                   atol=5e-5 + 5e-6 * e.abs().max().item())


@pytest.mark.skipif(not KERNELS, reason="no micro-kernel for this CPU (needs AVX2+FMA)")
def test_engines_agree_on_the_module():
    """The same module's float32 outputs and gradients on every engine agree closely."""
    import torchlstm
    torch.manual_seed(0)
    m = torchlstm.LSTM(32, 64, num_layers=2, bidirectional=True)
    x = torch.randn(80, 8, 32, requires_grad=True)
    res = {}
    for engine in ENGINES:
        with cpu_gemm(engine):
            out, (h, c) = m(x)
            g = torch.autograd.grad(out.square().sum() + c.sum(), [x] + list(m.parameters()))
            res[engine] = (out, h, c) + g
    for engine in ENGINES[1:]:
        for a, e in zip(res[engine], res["blas"]):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


# The large backward GEMMs (csrc/cpu/large_gemm.h): MKL (at::mm) or OpenBLAS.
BLASES = ["mkl"] + (["openblas"] if _C.cpu_openblas_loaded() else [])


def cpu_blas(name):
    return cpu_setting(_C.set_cpu_blas, name)


def test_openblas_is_loaded_from_the_wheel_and_auto_follows_the_vendor():
    pytest.importorskip("scipy_openblas32")  # a dependency: installed with torchlstm
    assert "openblas" in BLASES
    amd = "AuthenticAMD" in open("/proc/cpuinfo").read()
    with cpu_blas("auto"):
        assert _C.cpu_blas() == ("openblas" if amd else "mkl")
    with pytest.raises(ValueError, match="'auto', 'mkl', 'openblas'"):
        _C.set_cpu_blas("blis")


def test_without_the_openblas_wheel_the_large_gemms_run_on_mkl():
    import subprocess
    import sys
    code = ("import sys; sys.modules['scipy_openblas32'] = None\n"
            "import torch, torchlstm\n"
            "from torchlstm import _C\n"
            "assert _C.cpu_blas() == 'mkl'\n"
            "try:\n    _C.set_cpu_blas('openblas')\nexcept ValueError as e:\n"
            "    assert 'scipy-openblas32' in str(e)\nelse:\n    raise SystemExit('accepted')\n"
            "m = torchlstm.LSTM(3, 4); x = torch.randn(5, 2, 3, requires_grad=True)\n"
            "m(x)[0].sum().backward(); assert x.grad.isfinite().all()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout


@pytest.mark.parametrize("blas", BLASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("proj,masked,reverse", [(False, False, False), (True, True, True)])
@pytest.mark.parametrize("T,B,I_,H_,P_", [(12, 33, 17, 48, 20), (1, 3, 5, 2, 1), (4, 1, 1, 1, 1)],
                         ids=["odd", "proj1", "ones"])
def test_backward_on_each_blas_vs_float64(blas, dtype, proj, masked, reverse, T, B, I_, H_, P_):
    """The op's gradients with the large GEMMs on each BLAS (float32 and float64, the
    latter OpenBLAS's dgemm) against the float64 op on MKL; B=33 splits C's rows unevenly
    over a team of two threads; size-1 dimensions (proj_size 1, one step, one unit) make
    views whose two strides are both 1 (the sweep found OpenBLAS reading one such view
    the wrong way round)."""
    Hout = P_ if proj else H_
    torch.manual_seed(1)
    args64 = _layer_args(T, B, I_, H_, Hout, proj, masked, reverse, False)
    grads64 = (randn(T, B, Hout), randn(B, Hout), randn(B, H_))

    def run(args, grads):
        out, h_n, c_n, gates, cs = ops.layer_forward(*args)
        back = ops.layer_backward(*grads, args[0], args[1], args[2], args[3], args[4], args[7],
                                  args[8], out, gates, cs, args[9], 0, 1)
        return [b for b in back if b is not None and b.numel()]

    with cpu_blas("mkl"):
        want = run(args64, grads64)
    cast = lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
    with cpu_blas(blas):
        assert _C.cpu_blas() == blas
        got = run(tuple(cast(a) for a in args64), tuple(cast(g) for g in grads64))
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, e in zip(got, want):
        torch.testing.assert_close(a.double(), e, **tol)


@pytest.mark.skipif(len(BLASES) < 2, reason="OpenBLAS not installed")
def test_the_module_agrees_on_both_blases():
    import torchlstm
    torch.manual_seed(0)
    m = torchlstm.LSTM(24, 40, num_layers=2, bidirectional=True, proj_size=16)
    x = torch.randn(30, 7, 24, requires_grad=True)
    res = []
    for blas in BLASES:
        with cpu_blas(blas):
            out, (h, c) = m(x)
            res.append(torch.autograd.grad(out.square().sum() + c.sum(), [x] + list(m.parameters())))
    for a, e in zip(*res):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
